# Tiny READ on the built-in synthetic benchmark: the tiny LISA config (configs/lisa/lisa_tiny_synthref.py:
# same backbone, SAM, data, 500-iteration schedule and test section) with only the head changed to
# READ (spec seg_token_family.md §2): SasP point prompts from the [SEG]-to-image-token similarity,
# refined by DtoC, next to the [SEG] embedding.
_base_ = ["../lisa/lisa_tiny_synthref.py"]

# The tiny CLIP sees 128 px in 16 px patches: an 8x8 token grid. READ-7B down-samples its 24x24 grid
# to 12x12 (d=2) and takes 30 points (~21% of the cells); here d=1 keeps 8x8 cells of ~20 px (d=2
# would leave 4x4 cells of ~40 px, the size of the synthetic objects) and 13 points is the same share.
# Thresholds are READ's 0.8 / 0.2; the head follows the backbone's pad-to-square preprocessing.
model = dict(
    head=dict(type="READHead", num_points=13, down_sample=1, thresholds="fixed", t_pos=0.8, t_neg=0.2,
              dtoc=True, dtoc_kernel="gaussian", seg_prompt=True),
)
