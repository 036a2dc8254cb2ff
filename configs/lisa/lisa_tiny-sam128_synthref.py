# Tiny LISA as `make demo` trains it (since the session of 2026-12-04 (third)): the recipe of
# lisa_tiny-rsam128_synthref.py (SAM at 128 px in 8 px patches, no text loss, Dice weight 2.0, batch 16,
# 600 iterations) on a *pre-trained* tiny SAM whose image encoder and mask decoder are both frozen.
#
# The SAM comes from `make pretrain-demo`:
#   tools/research/pretrain_tiny.py --config configs/lisa/lisa_tiny-rsam128_synthref.py --parts sam --steps 600 \
#       --sam-aux-weight 2.0 --sam-attr-prompts --out data/tiny_models/sam128_attr
# It is trained on the synthetic train split only (no query text, no validation data), encoder and
# decoder, with point, box and attribute prompts: a learned colour and/or shape embedding as the sparse
# prompt, every matching object as the target. The attribute prompts are the tiny stand-in for SAM's
# own text-to-mask experiment (SAM paper §7.5: the decoder prompted with CLIP embeddings), and an
# auxiliary dense head keeps colour and shape in the image embedding. The prompt embeddings are
# discarded: LISA's projection of the [SEG] state has to learn what to send.
#
# The decoder is frozen (LISA trains it: seg_token_family.md §1.1, §1.4): trained on, it drifts from the
# prompts it learned to read and the runs spread more. Measured (docs/benchmarks.md, "Session of
# 2026-12-04 (third)"), RES val gIoU over four seeds: 0.413-0.446 (mean 0.430) with this SAM and the
# decoder frozen; 0.329-0.413 with a 300-step SAM whose decoder trains on; 0.295-0.329 over nine runs
# with the random SAM of lisa_tiny-rsam128_synthref.py, where two queries of one image get masks that
# overlap at IoU 0.58. The largest-object baseline is 0.290.
_base_ = ["./lisa_tiny-rsam128_synthref.py"]

model = dict(mask_source=dict(checkpoint="data/tiny_models/sam128_attr/sam_tiny.pth", train_mask_decoder=False))
