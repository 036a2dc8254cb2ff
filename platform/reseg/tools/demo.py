"""A local web page to try a trained model: ``python tools/demo.py CONFIG CHECKPOINT [--port 7860]``.

Open the printed address, upload an image, type a query and press *Segment*: the page shows the
predicted mask over the image, the mask itself, the answer (with ``generate``) and the head's maps
(READ's similarity points, AnchorSeg's prior, RAS's candidate pool with the selected group). For a
pool-based head (RAS) a reference mask can be drawn on the image ("everything the same colour as
this"); its pool comes from the config's proposer, or from ``--proposer PROPOSER_CONFIG`` (e.g.
``configs/_base_/proposers/sam_tiny_amg.py``) when the config has none (its training pools came
from the dataset).

The server binds to 127.0.0.1 (this machine only) unless ``--host`` says otherwise; ``--port 0``
picks a free port. The first line on stdout is ``reseg demo: http://HOST:PORT/``. Stop it with
Ctrl+C. What the server answers is described in :mod:`reseg.demo`.
"""
from __future__ import annotations

import argparse
import os
import sys

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Local web demo of a trained reseg model")
    p.add_argument("config")
    p.add_argument("checkpoint", help=".pth or .safetensors weights that fit the config's model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available, else CPU)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto (default): bf16 autocast on CUDA, fp32 on CPU; bf16 also works on CPU")
    p.add_argument("--proposer", metavar="PROPOSER_CONFIG", default=None,
                   help="for pool-based heads (RAS): a config with `proposer = dict(type=...)` that makes the "
                        "candidate pool of uploaded images (replaces the config's model.mask_source.proposer)")
    p.add_argument("--quiet", action="store_true", help="no access log on stderr")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be in 0..65535, got {args.port}")
    return args


def proposer_options(path: str) -> dict:
    """``{'model.mask_source.proposer': ...}`` from a ``--proposer`` config file."""
    from mmengine.config import Config

    if not os.path.isfile(path):
        sys.exit(f"error: --proposer: file {path!r} does not exist")
    prop = Config.fromfile(path).get("proposer", None)
    if not hasattr(prop, "get") or "type" not in prop:
        sys.exit(f"error: --proposer: {path} has no variable `proposer = dict(type=...)`")
    prop = prop.to_dict() if hasattr(prop, "to_dict") else dict(prop)
    return {"model.mask_source.proposer": dict(prop, _delete_=True)}  # replaces the config's proposer whole


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in ((args.config, "config"), (args.checkpoint, "checkpoint")):
        if not os.path.isfile(path):
            sys.exit(f"error: {what} file {path!r} does not exist")
    options = dict(args.cfg_options or {})
    if args.proposer is not None:
        options.update(proposer_options(args.proposer))

    from reseg.api import load_model
    from reseg.demo import DemoApp, make_server

    try:
        seg = load_model(args.config, args.checkpoint, device=args.device, cfg_options=options or None,
                         precision=args.precision)
    except (ValueError, RuntimeError, FileNotFoundError, NotImplementedError, TypeError) as err:
        sys.exit(f"error: {err}")
    if seg.uses_pools and getattr(seg.model.mask_source, "proposer", None) is None:
        sys.exit(f"error: {args.config} selects from a candidate pool but has no proposer "
                 "(model.mask_source.proposer), so an uploaded image would have no pool; pass --proposer "
                 "PROPOSER_CONFIG (e.g. configs/_base_/proposers/sam_tiny_amg.py)")
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    app = DemoApp(seg, config_name=os.path.basename(args.config))
    try:
        server = make_server(app, args.host, args.port, log=log)
    except OSError as err:
        sys.exit(f"error: cannot listen on {args.host}:{args.port} ({err}); choose another --port")
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"reseg demo: http://{shown}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
