"""Convert your own images, masks and queries (a JSON-lines file) to the gRefCOCO layout reseg reads.

    python tools/convert_own_data.py my_data.jsonl --out data/own_data
    python tools/convert_own_data.py my_data.jsonl --out data/own_data [--image-root DIR] [--copy-images]
        [--dataset own_data] [--val-fraction 0.1] [--seed 0] [--overwrite]

One line per image: ``{"image": ..., "objects": [{"id", "polygon" | "rle" | "mask", "category"}],
"queries": [{"text", "objects", "is_sentence"}], "split": ...}`` (docs/own_data.md has the schema).
The output is read by ``GRefCOCODataset(data_root=<out>/refer_seg, dataset=<dataset>,
image_dir="images/<dataset>")``, which configs/lisa/lisa_tiny_own-data.py uses. Images are not copied
unless ``--copy-images``: ``<out>/refer_seg/images/<dataset>`` links to the image root. Every invalid
line is reported (file, line, field, what was expected) and nothing is written; an existing conversion
is only replaced with ``--overwrite``. The logic is :mod:`reseg.datasets.own_data`.
"""
from __future__ import annotations

import argparse
import json
import sys

from reseg.datasets.own_data import DEFAULT_DATASET, OwnDataError, convert_own_data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsonl", help="the input: one JSON object per image (docs/own_data.md)")
    p.add_argument("--out", required=True, help="output root (the config's data_root), e.g. data/own_data")
    p.add_argument("--image-root", default=None,
                   help="folder the 'image' and 'mask' paths are relative to (default: the JSONL's folder)")
    p.add_argument("--copy-images", action="store_true",
                   help="copy the images into the output (default: link <out>/refer_seg/images/<dataset> to "
                        "the image root)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset folder name (default {DEFAULT_DATASET})")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the lines without a 'split' that become 'val' (default 0.1; 0: all 'train')")
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous conversion at --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        summary = convert_own_data(a.jsonl, a.out, image_root=a.image_root, copy_images=a.copy_images,
                                   dataset=a.dataset, val_fraction=a.val_fraction, seed=a.seed,
                                   overwrite=a.overwrite)
    except (OwnDataError, FileExistsError, FileNotFoundError, ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps(summary, indent=2))
    if "val" not in summary["splits"]:
        print("note: no 'val' split was written; the example config validates on it "
              "(give some lines \"split\": \"val\" or use --val-fraction > 0)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
