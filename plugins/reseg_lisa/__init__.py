"""reseg's built-in LISA head plugin (spec seg_token_family.md §1)."""
