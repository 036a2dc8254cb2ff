#!/usr/bin/env python
"""Segment your own images: ``python tools/infer.py CONFIG CHECKPOINT --image IMG --query "..." --out-dir DIR``.

Or many at once: ``--input queries.jsonl``, one JSON object per line::

    {"image": "photos/street.jpg", "query": "the man on the left"}
    {"image": "photos/kitchen.png", "queries": ["the kettle", "what would you use to boil water?"]}

(optional per line: ``"is_sentence": true/false`` to choose the long/short query template, see
:func:`reseg.api.looks_like_sentence` for the default; other fields are ignored). A relative image
path is looked up from the current directory, then from the JSONL file's folder.

For every query it writes into ``--out-dir``:

* ``masks/NNNNN_<image>_qK.png``: the mask (0 / 255, at the image's size);
* ``overlays/NNNNN_<image>_qK.png``: the image with the mask tinted, the query and the answer
  (:func:`reseg.engine.visualization.overlay_panel`, the panels of ``tools/test.py --show-dir``
  without the ground-truth one: image | prediction, plus the head's heat-maps);
* one line of ``results.jsonl``: ``image``, ``query``, ``query_index``, ``exists``, ``score``,
  ``text``, ``mask_rle`` (COCO RLE, ``counts`` as str; decode with ``pycocotools.mask.decode``),
  ``mask_png`` and ``overlay_png`` (relative to ``--out-dir``; ``overlay_png`` is null with
  ``--no-overlay``) and, with ``--input``, ``input_line`` (the line number in the JSONL file).

The lines go to ``results.jsonl.partial`` while the run goes on and are renamed to ``results.jsonl``
at the end, so an interrupted run never leaves a half-written ``results.jsonl`` (nor replaces the
previous one); the ``.partial`` file keeps what was done.

Every line is checked (fields, image files) before the model is loaded; a bad line stops the run
there, naming the file, the line and the field. A line whose conversation turns out longer than the
model's context (``model.lmm.max_length``) is skipped and reported (file, line, token count) while the
other lines go on; the run then exits with status 1.

An existing non-empty ``results.jsonl`` is not overwritten without ``--overwrite``. With it, once the
new run has finished, the PNGs that the replaced ``results.jsonl`` listed and the new run did not
write again are removed (nothing else in ``--out-dir`` is touched). Masks follow
:mod:`reseg.api` (``logits > 0``; empty when the model rejects the query).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from reseg.cfg_options import KeyValueAction

RESULTS = "results.jsonl"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Segment images with a trained reseg model")
    p.add_argument("config")
    p.add_argument("checkpoint", help=".pth or .safetensors weights that fit the config's model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one image file (with --query)")
    src.add_argument("--input", metavar="QUERIES.jsonl",
                     help='JSON lines {"image": path, "query": text} or {"image": path, "queries": [...]}')
    p.add_argument("--query", action="append",
                   help="the query about --image (repeat the flag for several queries)")
    p.add_argument("--out-dir", required=True, help="where masks/, overlays/ and results.jsonl go")
    p.add_argument("--generate", action="store_true",
                   help="free generation (the answer text is recorded; no [SEG] generated = empty mask) "
                        "instead of teacher forcing")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward (default 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available, else CPU)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto (default): bf16 autocast on CUDA, fp32 on CPU; bf16 also works on CPU")
    p.add_argument("--no-overlay", action="store_true", help="write only the masks and results.jsonl")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty results.jsonl")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    args = p.parse_args(argv)
    if args.image is not None and not args.query:
        p.error("--image needs --query")
    if args.input is not None and args.query:
        p.error("--query goes with --image; with --input the queries come from the JSONL file")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


class InputError(ValueError):
    """A bad --input line; the message names the file, the line and the field."""


def _resolve_image(path: str, base_dir: str) -> str | None:
    if os.path.isfile(path):
        return path
    if not os.path.isabs(path):
        alt = os.path.join(base_dir, path)
        if os.path.isfile(alt):
            return alt
    return None


def read_jobs(path: str) -> list[dict[str, Any]]:
    """``[{"image": given path, "path": resolved path, "queries": [...], "is_sentence": bool|None}]``
    from a JSONL file, every line checked before anything runs."""
    if not os.path.isfile(path):
        raise InputError(f"--input: file not found: {path!r}")
    from reseg.fileio import iter_json_objects

    base = os.path.dirname(os.path.abspath(path))
    jobs = []
    for n, where, obj in iter_json_objects(path, "'image' and 'query' (or 'queries')", InputError):
        image = obj.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{where}: field 'image' must be an image path (a non-empty string), "
                             f"got {image!r}")
        resolved = _resolve_image(image, base)
        if resolved is None:
            raise InputError(f"{where}: field 'image': file not found: {image!r} (looked in the current "
                             f"directory and in {base})")
        if ("query" in obj) == ("queries" in obj):
            raise InputError(f"{where}: give exactly one of the fields 'query' (a string) and 'queries' "
                             "(a list of strings)")
        if "query" in obj:
            field, queries = "query", [obj["query"]]
        else:
            field, queries = "queries", obj["queries"]
            if not isinstance(queries, list) or not queries:
                raise InputError(f"{where}: field 'queries' must be a non-empty list of strings, got "
                                 f"{queries!r}")
        for k, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                name = field if field == "query" else f"queries[{k}]"
                raise InputError(f"{where}: field {name!r} must be a non-empty string, got {q!r}")
        is_sentence = obj.get("is_sentence")
        if is_sentence is not None and not isinstance(is_sentence, bool):
            raise InputError(f"{where}: field 'is_sentence' must be true, false or absent, got {is_sentence!r}")
        jobs.append(dict(image=image, path=resolved, queries=queries, is_sentence=is_sentence, line=n))
    if not jobs:
        raise InputError(f"{path}: no queries (the file is empty)")
    return jobs


def _stem(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(path))[0])[:60] or "image"


class _Progress:
    """tqdm over the queries when it is installed, else one counter line per batch on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="query", desc="infer", file=sys.stderr)
        except ImportError:
            self.bar = None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            print(f"infer: {self.done}/{self.total} queries", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in ((args.config, "config"), (args.checkpoint, "checkpoint")):
        if not os.path.isfile(path):
            sys.exit(f"error: {what} file {path!r} does not exist")
    results_path = os.path.join(args.out_dir, RESULTS)
    if os.path.isfile(results_path) and os.path.getsize(results_path) > 0 and not args.overwrite:
        sys.exit(f"error: {results_path!r} exists and is not empty; pass --overwrite to replace it")
    try:
        if args.input is not None:
            jobs = read_jobs(args.input)
        else:
            if not os.path.isfile(args.image):
                raise InputError(f"--image: file not found: {args.image!r}")
            bad = [q for q in args.query if not q.strip()]
            if bad:
                raise InputError("--query: a query must not be empty")
            jobs = [dict(image=args.image, path=args.image, queries=list(args.query), is_sentence=None, line=None)]
    except InputError as err:
        sys.exit(f"error: {err}")

    from reseg.api import load_model

    try:
        seg = load_model(args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options,
                         batch_size=args.batch_size, precision=args.precision)
    except (ValueError, RuntimeError, FileNotFoundError, NotImplementedError) as err:
        sys.exit(f"error: {err}")
    generate = True if args.generate else None
    os.makedirs(os.path.join(args.out_dir, "masks"), exist_ok=True)
    if not args.no_overlay:
        os.makedirs(os.path.join(args.out_dir, "overlays"), exist_ok=True)

    progress = _Progress(sum(len(j["queries"]) for j in jobs))
    partial = results_path + ".partial"
    skipped: list[str] = []
    try:
        written = _run(args, jobs, seg, generate, partial, progress, skipped)
    except BaseException:
        progress.close()
        if os.path.isfile(partial) and os.path.getsize(partial) == 0:
            os.remove(partial)
        elif os.path.isfile(partial):
            print(f"stopped early; the results so far are in {partial}", file=sys.stderr)
        raise
    progress.close()
    stale = _previous_outputs(results_path) - _previous_outputs(partial)
    os.replace(partial, results_path)
    for rel in sorted(stale):  # PNGs of the replaced run that this run did not write again
        os.remove(os.path.join(args.out_dir, rel))
    print(f"{written} results written to {results_path}" + (f"; {len(stale)} PNGs of the replaced run removed"
                                                              if stale else ""))
    if skipped:
        print(f"error: {len(skipped)} of {len(jobs)} lines skipped (too long for model.lmm.max_length):\n"
              + "\n".join(f"  {s}" for s in skipped), file=sys.stderr)
        return 1
    return 0


def _previous_outputs(results_path: str) -> set[str]:
    """The PNG files (relative to the output folder) that the lines of ``results_path`` refer to and that
    exist inside that folder: with ``--overwrite``, those of the replaced run that the new run does not
    write again are removed, so the folder holds only what the new ``results.jsonl`` describes. Lines
    that do not parse are skipped (nothing is removed on their account)."""
    out_dir = os.path.dirname(os.path.abspath(results_path))
    found: set[str] = set()
    if not os.path.isfile(results_path):
        return found
    with open(results_path, encoding="utf-8") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            for key in ("mask_png", "overlay_png"):
                rel = obj.get(key) if isinstance(obj, dict) else None
                if not isinstance(rel, str) or os.path.isabs(rel):
                    continue
                full = os.path.abspath(os.path.join(out_dir, rel))
                if os.path.dirname(full) in (os.path.join(out_dir, "masks"), os.path.join(out_dir, "overlays")) \
                        and os.path.isfile(full):
                    found.add(os.path.relpath(full, out_dir))
    return found


def _segment(seg, chunk: list[dict], images: list, generate: bool | None) -> list:
    """The results of ``chunk`` (one list per job): one forward, or one per ``is_sentence`` choice when
    the lines set it differently."""
    per_image: list = [None] * len(chunk)
    for flag in {j["is_sentence"] for j in chunk}:
        idx = [k for k, j in enumerate(chunk) if j["is_sentence"] is flag]
        res = seg.segment_batch([images[k] for k in idx], [chunk[k]["queries"] for k in idx],
                                generate=generate, is_sentence=flag)
        for k, r in zip(idx, res):
            per_image[k] = r
    return per_image


def _run(args, jobs: list[dict], seg, generate: bool | None, partial: str, progress: _Progress,
         skipped: list[str]) -> int:
    """Segment every job, write the PNGs and the result lines (into ``partial``); the number of lines.
    A job whose conversation exceeds the model's context is reported, appended to ``skipped`` and left
    out; the others go on."""
    import cv2

    from reseg.api import as_rgb_image
    from reseg.engine.visualization import result_panel
    from reseg.fileio import atomic_write_bytes
    from reseg.masks.rle import encode_rle
    from reseg.models.lmm import ContextLengthError

    written = 0
    with open(partial, "w", encoding="utf-8") as out:
        for start in range(0, len(jobs), args.batch_size):
            chunk = jobs[start: start + args.batch_size]
            images = []
            for j in chunk:
                try:
                    images.append(as_rgb_image(j["path"], "image"))
                except Exception as err:  # unreadable or corrupt file
                    where = f"{args.input}, line {j['line']}, field 'image'" if j["line"] else "--image"
                    sys.exit(f"error: {where}: {err}")
            try:
                per_image = _segment(seg, chunk, images, generate)
            except ContextLengthError:  # a line too long for the model: find it, skip it, go on
                per_image = []
                for j, image in zip(chunk, images):
                    try:
                        per_image += _segment(seg, [j], [image], generate)
                    except ContextLengthError as err:
                        per_image.append(None)
                        where = f"{args.input}, line {j['line']}" if j["line"] else "--query"
                        skipped.append(f"{where}: skipped: {err}")
                        print(f"error: {skipped[-1]}", file=sys.stderr, flush=True)
            for k, (j, image, res) in enumerate(zip(chunk, images, per_image)):
                if res is None:
                    progress.update(len(j["queries"]))
                    continue
                n = start + k
                for qi, r in enumerate(res):
                    name = f"{n:05d}_{_stem(j['image'])}_q{qi}.png"
                    mask_rel = os.path.join("masks", name)
                    _, buf = cv2.imencode(".png", r.mask.astype("uint8") * 255)
                    atomic_write_bytes(os.path.join(args.out_dir, mask_rel), buf.tobytes())
                    overlay_rel = None
                    if not args.no_overlay:
                        panel = result_panel(image, r)
                        overlay_rel = os.path.join("overlays", name)
                        _, buf = cv2.imencode(".png", panel[..., ::-1])
                        atomic_write_bytes(os.path.join(args.out_dir, overlay_rel), buf.tobytes())
                    line = dict(image=j["image"], query=r.query, query_index=qi, exists=r.exists, score=r.score,
                                text=r.text, mask_rle=encode_rle(r.mask), mask_png=mask_rel,
                                overlay_png=overlay_rel)
                    if j["line"] is not None:
                        line["input_line"] = j["line"]
                    out.write(json.dumps(line) + "\n")
                    written += 1
                out.flush()
                progress.update(len(res))
    return written


if __name__ == "__main__":
    sys.exit(main())
