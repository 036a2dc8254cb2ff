"""Diagnose a [SEG]-family model: do its mask-token states depend on the query? Is its SAM good?

    python tools/research/analyze_seg_states.py CONFIG CHECKPOINT|none [--images 4] [--sam-point-check 40]

* ``[SEG]`` similarity: for the first ``--images`` validation images, the mean pairwise cosine
  similarity of the ``[SEG]`` hidden states (and of their projections) over all queries. Values
  near 1.0 mean the LLM emits one constant prompt whatever the question (docs/benchmarks.md).
* ``--sam-point-check N``: the mask source alone, prompted with one positive point inside each target
  of the first N validation images (the pixel at the middle of the target's pixel list): mean IoU.
  It measures the (pre-trained) SAM, independent of the LLM.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from mmengine.config import Config

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("checkpoint", help="checkpoint file, or 'none' for the model at initialisation")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--sam-point-check", type=int, default=0, metavar="N")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    return p.parse_args(argv)


def mean_offdiag_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows of ``x`` (``[N, D]``, N >= 2)."""
    x = torch.nn.functional.normalize(x.float(), dim=-1)
    sim = x @ x.T
    n = len(x)
    return float((sim.sum() - sim.diagonal().sum()) / (n * n - n))


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    from mmengine.registry import DefaultScope

    DefaultScope.get_instance("analyze_seg_states", scope_name="reseg")
    import reseg.datasets  # noqa: F401
    from reseg.engine.checkpoint import load_checkpoint_file
    from reseg.models.heads import seg_token_states
    from reseg.plugins import load_plugins
    from reseg.registry import DATASETS, MODELS

    load_plugins()  # the heads are plugins
    model = MODELS.build(cfg.model)
    if args.checkpoint != "none":
        missing, unexpected = model.load_state_dict(load_checkpoint_file(args.checkpoint)["state_dict"], strict=False)
        if missing or unexpected:
            sys.exit(f"checkpoint does not match the config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.eval()
    ds_cfg = cfg.val_dataloader.dataset
    ds = DATASETS.build(ds_cfg.datasets[0] if ds_cfg.get("type") == "ConcatDataset" else ds_cfg)
    batch = [ds[i] for i in range(min(args.images, len(ds)))]
    with torch.no_grad():
        ctx = model.prepare(batch, "val")
        model.run_lmm(ctx)
        states, _, _ = seg_token_states(ctx.lmm_out["hidden"], ctx.tokens["input_ids"], model.head.seg_id)
        proj = model.head.projection(states)
    print(f"queries: {len(states)}")
    print(f"[SEG] hidden states: mean pairwise cosine {mean_offdiag_cosine(states):.4f}")
    print(f"[SEG] projected prompts: mean pairwise cosine {mean_offdiag_cosine(proj):.4f}")

    if args.sam_point_check:
        src = model.mask_source
        ious = []
        for i in range(min(args.sam_point_check, len(ds))):
            s = ds[i]
            pixels, sizes = src.preprocess([s.image])
            with torch.no_grad():
                emb = src.embed(pixels)
            scale = src.image_size / max(s.size)
            for q in s.queries:
                ys, xs = np.nonzero(q.target)
                if len(xs) == 0:
                    continue
                k = len(xs) // 2
                pts = torch.tensor([[[xs[k] * scale, ys[k] * scale]]], dtype=torch.float32, device=src.device)
                lab = torch.ones(1, 1, dtype=torch.int, device=src.device)
                with torch.no_grad():
                    sp, de = src.sam.prompt_encoder(points=(pts, lab), boxes=None, masks=None)
                    low, _ = src.sam.mask_decoder(image_embeddings=emb, image_pe=src.sam.prompt_encoder.get_dense_pe(),
                                                  sparse_prompt_embeddings=sp, dense_prompt_embeddings=de,
                                                  multimask_output=False)
                    m = (src.postprocess(low, sizes[0], s.size)[0] > 0).cpu().numpy()
                ious.append((m & q.target).sum() / max((m | q.target).sum(), 1))
        print(f"SAM one-point prompt: mean IoU {np.mean(ious):.4f} over {len(ious)} targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
