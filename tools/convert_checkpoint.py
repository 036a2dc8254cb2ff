#!/usr/bin/env python
"""Convert an official checkpoint (LISA, READ, AnchorSeg, or any plugin's method) into a reseg checkpoint.

    python tools/convert_checkpoint.py --from lisa SRC DST [--config CONFIG] [--non-strict] [--overwrite]

``--from NAME`` names a checkpoint converter registered by a plugin (``reseg list checkpoint_converters``;
the built-in ones: lisa, read, anchorseg); an unknown name lists the registered ones.

SRC: a ``.bin``/``.pth`` state dict (read with ``weights_only=True``), a ``.safetensors`` file, or a
Hugging Face model directory (``pytorch_model-*.bin`` / ``model-*.safetensors`` shards + index json),
e.g. the released ``xinlai/LISA-7B-v1``. DST: ``.safetensors`` or ``.pth`` (``{'state_dict': ...}``),
loadable by ``tools/test.py CONFIG DST``. Released checkpoints leave out the CLIP tower (the official merge
script drops every ``vision_tower`` key): pass ``--vision-tower CLIP_SRC`` (e.g. a local
``openai/clip-vit-large-patch14`` directory) to fill it in. With ``--config`` the result is checked against that
config's model (names and shapes). Strict by default: any unmapped source key, missing target key or
shape mismatch is an error; ``--non-strict`` writes anyway and prints the report.

The official key names and their reseg counterparts are documented in each plugin's ``convert.py``,
``reseg.convert`` (the layout the ``[SEG]`` family shares) and ``docs/convert_checkpoint.md``.
"""
import sys

from reseg.convert import main

if __name__ == "__main__":
    sys.exit(main())
