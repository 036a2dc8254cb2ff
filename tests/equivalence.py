"""Pinned numbers of every tiny config: losses, gradients and predictions on one fixed seeded batch.

The core/head contract may be refactored freely, but a refactor must not change what a model
computes. :func:`record` builds a config's model with random weights (seed 0, one thread, every
checkpoint path removed so nothing needs ``make pretrain``), feeds it a fixed batch from the
synthetic benchmark and summarises the training losses, the gradient norm, the teacher-forced
predictions and the free-generation answers. ``tests/test_equivalence.py`` compares a fresh record
with the stored one (``tests/fixtures/equivalence.json``), made by::

    .venv/bin/python tests/equivalence.py --write tests/fixtures/equivalence.json

Rewrite the file only when a change of numbers is intended, and say why in the commit.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

#: config -> which batch it is fed (``seg``: REFER + ReasonSeg + gRefCOCO + FP + VQA images; ``pool``:
#: MaskGroups images with their pools and a REFER image with a pool made from its instances).
CONFIGS: dict[str, str] = {
    "lisa/lisa_tiny_synthref.py": "seg",
    "lisa/lisa_tiny-rsam128_synthref.py": "seg",
    "lisa/lisa_tiny-sam128_synthref.py": "seg",
    "lisa/lisa-rej_tiny_synthref-mix.py": "seg",
    "read/read_tiny_synthref.py": "seg",
    "anchorseg/anchorseg_tiny_synthref.py": "seg",
    "anchorseg/anchorseg-qb_tiny_synthref.py": "seg",
    "anchorseg/anchorseg-qb-prior_tiny_synthref.py": "seg",
    "ras/ras_tiny_synthref-ores.py": "pool",
    "ras/ras_tiny_synthref-res.py": "pool",
    "ras/ras-ar_tiny_synthref-ores.py": "pool",
    "ras/ras-stage1_tiny_synthref-caption.py": "pool",
}

#: pixels (fractions of H and W) at which each predicted mask's logits are recorded
PROBE = [(0.1, 0.1), (0.25, 0.6), (0.4, 0.3), (0.5, 0.5), (0.6, 0.85), (0.75, 0.2), (0.9, 0.7), (0.33, 0.95)]
#: generation budget of the recorded free generation (short: the tiny models are random)
MAX_NEW_TOKENS = 6
#: comparison tolerance (absolute and relative)
TOL = 1e-6


def _strip_checkpoints(cfg: dict, tokenizer_dir: str) -> dict:
    """The config's model with random weights: no checkpoint is read, the tokenizer goes to a temp dir."""
    lmm = cfg["lmm"]
    lmm["tiny"]["tokenizer_dir"] = tokenizer_dir
    for key in ("vision_checkpoint", "checkpoint"):
        lmm["tiny"].pop(key, None)
    ms = cfg.get("mask_source") or {}
    if ms.get("type") == "SAMMaskSource":
        ms["checkpoint"] = None
    if ms.get("type") == "CandidatePoolSource":
        ms["proposer"] = None
        ms["pool"] = "auto"
    return cfg


def build_model(config: str, tokenizer_dir: str) -> torch.nn.Module:
    from mmengine.config import Config

    from reseg.plugins import load_plugins
    from reseg.registry import MODELS

    load_plugins()
    cfg = Config.fromfile(str(ROOT / "configs" / config))
    model_cfg = _strip_checkpoints(cfg.to_dict()["model"], tokenizer_dir)
    torch.manual_seed(0)
    return MODELS.build(model_cfg)


def batch(kind: str, synth_root: Path) -> list:
    """The fixed batch of ``kind`` from the synthetic benchmark (test-mode loaders: no random draws)."""
    from reseg.datasets import FPRefCOCODataset, GRefCOCODataset, MaskGroupsDataset, ReasonSegDataset, RefCOCODataset
    from reseg.datasets.synthref.vqa import SynthVQADataset

    refer = synth_root / "refer_seg"
    if kind == "seg":
        samples = [RefCOCODataset(refer, dataset="synthref", split="val", test_mode=True)[0],
                   ReasonSegDataset(synth_root / "reason_seg", split="val", test_mode=True)[1],
                   GRefCOCODataset(refer, dataset="grefcoco_synth", split="val", test_mode=True)[0],
                   FPRefCOCODataset(refer, dataset="fprefcoco_synth", split="val", test_mode=True)[0],
                   SynthVQADataset(refer, split="val", test_mode=True)[0]]
    else:
        groups = MaskGroupsDataset(synth_root / "mask_groups", split="validation", test_mode=True)
        res = RefCOCODataset(refer, dataset="synthref", split="val", test_mode=True)[1]
        inst = np.concatenate([q.masks for q in res.queries], 0)
        _, keep = np.unique(inst.reshape(len(inst), -1), axis=0, return_index=True)
        res.candidate_masks = inst[np.sort(keep)]
        res.meta["caption"] = "shapes on a plain background"  # for RAS stage 1 (captioning)
        samples = [groups[0], groups[1], res]
    out = []
    for k, s in enumerate(samples):
        s.queries = s.queries[:3]
        s.meta["seed"] = 1000 + k  # the head's template choices depend on the sample alone
        out.append(s)
    return out


def _num(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    if isinstance(x, np.ndarray):
        return [round(float(v), 9) for v in x.reshape(-1)]
    return x


def _mask_summary(masks: Any) -> dict:
    m = masks.detach().float().cpu() if isinstance(masks, torch.Tensor) else torch.as_tensor(np.asarray(masks)).float()
    out: dict[str, Any] = {"shape": list(m.shape)}
    if m.numel():
        out["mean"] = float(m.mean())
        out["absmean"] = float(m.abs().mean())
        h, w = m.shape[-2:]
        out["probe"] = [float(m[j, int(fy * h), int(fx * w)]) for j in range(min(len(m), 3)) for fy, fx in PROBE]
    return out


def _prediction_summary(p) -> dict:
    out = dict(masks=_mask_summary(p.masks), exists=bool(p.exists), text=p.text,
               selected=None if p.selected is None else [int(i) for i in p.selected])
    if p.scores is not None:
        out["scores"] = _num(torch.as_tensor(np.asarray(p.scores, dtype=np.float32)))
    maps = (p.extras or {}).get("heatmaps") or {}
    out["heatmaps"] = {k: _mask_summary(v) for k, v in sorted(maps.items())}
    if "candidate_probs" in (p.extras or {}):
        out["candidate_probs"] = _num(torch.as_tensor(np.asarray(p.extras["candidate_probs"], dtype=np.float32)))
    return out


def _prefer_seg(model: torch.nn.Module, text: str) -> None:
    """Make the LM head answer ``[SEG]`` wherever it would answer the first token of ``text`` (with a
    positive logit): ``[SEG]``'s output row becomes 1.01 times that token's. Free generation then emits
    mask tokens and exercises the generated-``[SEG]`` path of every ``[SEG]`` head."""
    tok = model.lmm.tokenizer
    first = tok(text, add_special_tokens=False).input_ids[0]
    seg = tok.convert_tokens_to_ids("[SEG]")
    w = model.lmm.model.lm_head.weight
    w.data[seg] = 1.01 * w.data[first]


def record(config: str, synth_root: Path, tokenizer_dir: str) -> dict:
    """Losses, gradient norm and predictions of ``config``'s randomly initialised model on its batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(config, tokenizer_dir)
        samples = batch(CONFIGS[config], synth_root)
        model.train()
        losses = model(samples, mode="loss")
        total = sum(v for k, v in losses.items() if k.startswith("loss"))
        model.zero_grad()
        total.backward()
        grads = [p.grad.detach().float().norm() ** 2 for p in model.parameters() if p.grad is not None]
        out: dict[str, Any] = {"loss": {k: float(v.detach()) for k, v in sorted(losses.items())},
                               "grad_norm": float(torch.stack(grads).sum().sqrt()) if grads else 0.0}
        model.eval()
        model.max_new_tokens = MAX_NEW_TOKENS
        with torch.no_grad():
            for name, gen in (("val", False), ("generate", True)):
                preds = model.predict(batch(CONFIGS[config], synth_root), generate=gen)
                out[name] = [[_prediction_summary(p) for p in r["predictions"]] for r in preds]
            if "[SEG]" in model.head.special_tokens:  # a random LLM never says [SEG]: make it
                _prefer_seg(model, preds[0]["predictions"][0].text)
                preds = model.predict(batch(CONFIGS[config], synth_root), generate=True)
                out["generate_seg"] = [[_prediction_summary(p) for p in r["predictions"]] for r in preds]
        return out
    finally:
        torch.set_num_threads(threads)


def make_synth(root: Path) -> Path:
    """The tests' session benchmark (``tests/conftest.py``), written to ``root``."""
    from conftest import make_synth_config
    from reseg.datasets.synthref import generate_synthref

    generate_synthref(root, make_synth_config())
    return root


def compare(got: Any, want: Any, where: str = "", tol: float = TOL) -> list[str]:
    """Every place where ``got`` differs from ``want`` beyond ``tol`` (floats) or at all (the rest)."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{where}: keys {sorted(got) if isinstance(got, dict) else got!r} != {sorted(want)}"]
        return [d for k in want for d in compare(got[k], want[k], f"{where}.{k}", tol)]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: {got!r} != {want!r}"]
        return [d for k, (g, w) in enumerate(zip(got, want)) for d in compare(g, w, f"{where}[{k}]", tol)]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        ok = abs(got - want) <= tol + tol * abs(want)
        return [] if ok else [f"{where}: {got!r} != {want!r}"]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", required=True, help="the JSON file to write (tests/fixtures/equivalence.json)")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help="configs/ paths (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synth(Path(tmp) / "synth")
        records = {c: record(c, root, str(Path(tmp) / "tok")) for c in args.configs}
    Path(args.write).write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.write}: {len(records)} configs")


if __name__ == "__main__":
    main()
