"""Convert an official LISA / READ / AnchorSeg checkpoint into a reseg checkpoint.

    python tools/convert_checkpoint.py --from lisa SRC DST [--config CONFIG] [--non-strict] [--overwrite]

SRC: a ``.bin``/``.pth`` state dict (read with ``weights_only=True``), a ``.safetensors`` file, or a
Hugging Face model directory (``pytorch_model-*.bin`` / ``model-*.safetensors`` shards + index json),
e.g. the released ``xinlai/LISA-7B-v1``. DST: ``.safetensors`` or ``.pth`` (``{'state_dict': ...}``),
loadable by ``tools/test.py CONFIG DST``. Released checkpoints leave out the CLIP tower (the official merge
script drops every ``vision_tower`` key): pass ``--vision-tower CLIP_SRC`` (e.g. a local
``openai/clip-vit-large-patch14`` directory) to fill it in. With ``--config`` the result is checked against that
config's model (names and shapes). Strict by default: any unmapped source key, missing target key or
shape mismatch is an error; ``--non-strict`` writes anyway and prints the report.

The official key names and their reseg counterparts are documented in ``reseg.convert`` and
``docs/convert_checkpoint.md``.
"""
from __future__ import annotations

import argparse
import os
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    from reseg.convert import METHODS

    p = argparse.ArgumentParser(description="Convert an official checkpoint to reseg's module names")
    p.add_argument("--from", dest="method", required=True, choices=METHODS, help="which official repository")
    p.add_argument("src", help="official checkpoint: .bin/.pth/.safetensors file or HF model directory")
    p.add_argument("dst", help="output reseg checkpoint (.safetensors or .pth)")
    p.add_argument("--config", help="reseg config whose model the result must fit (checked by name and shape)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                   help="overrides for --config, e.g. model.lmm.lora=None")
    p.add_argument("--vision-tower", metavar="CLIP_SRC",
                   help="CLIP checkpoint (HF CLIPModel/CLIPVisionModel directory or file) to fill in the vision "
                        "tower, which the official merge scripts leave out of released checkpoints")
    p.add_argument("--expand-linear-projector", action="store_true",
                   help="the LISA repository's single-Linear mm_projector -> linear_1 = it, linear_2 = identity "
                        "(the target config must use projector_hidden_act='linear')")
    p.add_argument("--non-strict", action="store_true", help="write even if keys are unmapped/missing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from reseg.convert import ConversionError, convert_checkpoint

    if args.config is not None and not os.path.isfile(args.config):
        print(f"error: config file {args.config!r} does not exist", file=sys.stderr)
        return 2
    try:
        report = convert_checkpoint(args.src, args.dst, args.method, config=args.config,
                                    strict=not args.non_strict, overwrite=args.overwrite,
                                    cfg_options=args.cfg_options, vision_tower=args.vision_tower,
                                    expand_linear_projector=args.expand_linear_projector)
    except (ConversionError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.format())
    print(f"written: {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
