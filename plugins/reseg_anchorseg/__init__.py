"""reseg's built-in AnchorSeg head plugin (spec anchorseg_ras.md §1): a language-grounded query bank of
latent tokens before ``[SEG]``, the anchor's image similarity as SAM's dense prompt, and token-mask
cycle consistency (TMCC) losses."""
