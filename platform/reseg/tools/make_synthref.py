"""Write the synthetic benchmark (REFER, ReasonSeg, gRefCOCO, FP-RefCOCO and MaskGroups formats) to a folder.

    python tools/make_synthref.py --out data/synthref --seed 0
    python tools/make_synthref.py --out /tmp/tiny --num-train 20 --num-val 5 --num-testA 5 --num-testB 5 \
        --reason-train 10 --reason-val 5 --reason-test 5 \
        --gref-train 10 --gref-val 5 --gref-testA 0 --gref-testB 0 \
        --fp-train 10 --fp-val 5 --fp-testA 0 --fp-testB 0 --mg-train 10 --mg-validation 5

A count of 0 skips that split (all four of a REFER-layout family at 0: no files for it). Same seed and
counts => byte-identical files. See reseg.datasets.synthref for the layout.
"""
from __future__ import annotations

import argparse
import json
import sys

from reseg.datasets.synthref import SynthRefConfig, generate_synthref

REFER_SPLITS = ("train", "val", "testA", "testB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = SynthRefConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/synthref", help="benchmark root (default: data/synthref)")
    p.add_argument("--seed", type=int, default=d.seed)
    for s in REFER_SPLITS:
        p.add_argument(f"--num-{s}", type=int, default=d.refer_counts[s], help=f"REFER {s} images")
    for s in ("train", "val", "test"):
        p.add_argument(f"--reason-{s}", type=int, default=d.reason_counts[s], help=f"ReasonSeg {s} images")
    for s in REFER_SPLITS:
        p.add_argument(f"--gref-{s}", type=int, default=d.gref_counts[s], help=f"gRefCOCO {s} images")
    for s in REFER_SPLITS:
        p.add_argument(f"--fp-{s}", type=int, default=d.fp_counts[s], help=f"FP-RefCOCO {s} images")
    for s in ("train", "validation"):
        p.add_argument(f"--mg-{s}", type=int, default=d.maskgroups_counts[s], help=f"MaskGroups {s} images")
    p.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing benchmark at --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cfg = SynthRefConfig(
        seed=a.seed,
        refer_counts={s: getattr(a, f"num_{s}") for s in REFER_SPLITS},
        reason_counts={s: getattr(a, f"reason_{s}") for s in ("train", "val", "test")},
        gref_counts={s: getattr(a, f"gref_{s}") for s in REFER_SPLITS},
        fp_counts={s: getattr(a, f"fp_{s}") for s in REFER_SPLITS},
        maskgroups_counts={s: getattr(a, f"mg_{s}") for s in ("train", "validation")},
    )
    meta = generate_synthref(a.out, cfg, workers=a.workers, overwrite=a.overwrite)
    summary = {"out": a.out, "seconds": meta["_seconds"]}
    for key in ("refer", "reason", "grefcoco", "fprefcoco", "mask_groups"):
        summary[key] = {s: {k: v for k, v in st.items() if not k.startswith("strategy_")}
                        for s, st in meta[key]["splits"].items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
