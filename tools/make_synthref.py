"""Write the synthetic benchmark (REFER/COCO + ReasonSeg formats) to a folder.

    python tools/make_synthref.py --out data/synthref --seed 0
    python tools/make_synthref.py --out /tmp/tiny --num-train 20 --num-val 5 --num-testA 5 --num-testB 5 \
        --reason-train 10 --reason-val 5 --reason-test 5

Same seed and counts => byte-identical files. See reseg.datasets.synthetic for the layout.
"""
from __future__ import annotations

import argparse
import json
import sys

from reseg.datasets.synthetic import SynthRefConfig, generate_synthref


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = SynthRefConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/synthref", help="benchmark root (default: data/synthref)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-train", type=int, default=d.refer_counts["train"], help="REFER train images")
    p.add_argument("--num-val", type=int, default=d.refer_counts["val"], help="REFER val images")
    p.add_argument("--num-testA", type=int, default=d.refer_counts["testA"], help="REFER testA images")
    p.add_argument("--num-testB", type=int, default=d.refer_counts["testB"], help="REFER testB images")
    p.add_argument("--reason-train", type=int, default=d.reason_counts["train"], help="ReasonSeg train images")
    p.add_argument("--reason-val", type=int, default=d.reason_counts["val"], help="ReasonSeg val images")
    p.add_argument("--reason-test", type=int, default=d.reason_counts["test"], help="ReasonSeg test images")
    p.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing benchmark at --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cfg = SynthRefConfig(
        seed=a.seed,
        refer_counts={"train": a.num_train, "val": a.num_val, "testA": a.num_testA, "testB": a.num_testB},
        reason_counts={"train": a.reason_train, "val": a.reason_val, "test": a.reason_test},
    )
    meta = generate_synthref(a.out, cfg, workers=a.workers, overwrite=a.overwrite)
    summary = {"out": a.out, "seconds": meta["_seconds"],
               "refer": meta["refer"]["splits"], "reason": meta["reason"]["splits"]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
