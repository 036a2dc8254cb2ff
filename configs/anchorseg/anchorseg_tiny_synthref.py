# Tiny AnchorSeg on the built-in synthetic benchmark: the tiny LISA config (configs/lisa/lisa_tiny_synthref.py:
# same backbone, SAM, data, 500-iteration schedule and test section) with only the head changed to
# AnchorSeg (spec anchorseg_ras.md §1): 7 latent tokens before every [SEG] (query bank), the anchor's
# similarity with the image tokens fed to SAM as a dense mask prompt (spatial prior), and the
# Token-to-Mask / Mask-to-Token losses (TMCC), all with the released script's values (BCE 2.0, Dice 2.0,
# Gaussian kernel 31 / sigma 7). The head follows the backbone's pad-to-square preprocessing; SAM's
# mask_downscaling is made trainable by the head (the tiny base freezes the prompt encoder).
# This is the "+ TMCC" (full) row of the ablation; see anchorseg-qb_* and anchorseg-qb-prior_*.
_base_ = ["../lisa/lisa_tiny_synthref.py"]

model = dict(
    head=dict(type="AnchorSegHead", num_latents=7, use_prior=True, tmcc=True, tmcc_inputs="logits",
              gaussian_ksize=31, gaussian_sigma=7.0, ce_weight=1.0, bce_weight=2.0, dice_weight=2.0),
)
