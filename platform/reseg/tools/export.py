"""Export a trained model: ``python tools/export.py CONFIG CHECKPOINT OUT_DIR [--cfg-options ...] [--overwrite]``.

Writes ``OUT_DIR/llava/`` (a Hugging Face LLaVA directory with LoRA merged, the tokenizer with the head's
tokens and the image processor), ``OUT_DIR/reseg_extra.safetensors`` (the mask source, head and every
other weight, under their reseg names) and ``OUT_DIR/reseg_export.json`` (config, checkpoint, merged
LoRA, package versions). See :mod:`reseg.export`; reload with ``reseg.export.load_exported(OUT_DIR)``.

A non-empty OUT_DIR is refused without ``--overwrite``; the export is assembled under a temporary
name next to OUT_DIR and renamed into place only when complete.
"""
from __future__ import annotations

import argparse
import os
import sys

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Export a reseg model (LoRA merged) as a Hugging Face LLaVA "
                                            "directory plus the other weights")
    p.add_argument("config")
    p.add_argument("checkpoint", help=".pth or .safetensors weights that fit the config's model")
    p.add_argument("out_dir", help="the export directory (must not exist or be empty, unless --overwrite)")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--device", default="cpu", help="where to build the model and merge LoRA (default cpu)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in ((args.config, "CONFIG"), (args.checkpoint, "CHECKPOINT")):
        if not os.path.isfile(path):
            sys.exit(f"error: {what} file {path!r} does not exist")
    from reseg.export import check_out_dir, export_model

    try:
        check_out_dir(args.out_dir, args.overwrite)  # before the (slow) model build
        out = export_model(args.config, args.checkpoint, args.out_dir, cfg_options=args.cfg_options,
                           overwrite=args.overwrite, device=args.device)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, FileExistsError, NotImplementedError) as err:
        sys.exit(f"error: {err}")
    print(f"exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
