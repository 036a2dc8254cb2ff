"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--out-metrics metrics.json]``.

CHECKPOINT is a reseg/mmengine ``.pth`` (read with ``weights_only=True``) or a ``.safetensors`` file
(``reseg weights``); it must fit the config's model exactly (a mismatch is an error naming the keys).
A checkpoint that records another model (another head, backbone or mask source type: a LISA
checkpoint fits READ's keys exactly) is a warning, an error with ``--strict-meta``.

Runs the config's ``test_dataloader``/``test_evaluator`` (mmengine ``Runner.test``), prints a metrics
table and, with ``--out-metrics``, writes one JSON object with every metric, the sample counts, the
convention settings and (``--baselines``) the trivial baselines on the same data. With
``--dump-predictions preds.jsonl`` it also writes every prediction for ``tools/evaluate.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from mmengine.config import Config

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a reseg checkpoint")
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--work-dir", help="where the test log goes (default work_dirs/<config name>): a folder "
                   "test_<timestamp>; the training run's files there are left alone")
    p.add_argument("--out-metrics", help="write the metrics as JSON to this file")
    p.add_argument("--show-dir", help="save overlay PNGs (image | ground truth | prediction) here")
    p.add_argument("--max-vis", type=int, default=8, help="how many overlays --show-dir saves")
    p.add_argument("--generate", action="store_true",
                   help="free generation instead of teacher forcing (no [SEG] generated = empty mask)")
    p.add_argument("--baselines", action="store_true",
                   help="also score the trivial baselines (empty mask, whole image, largest object, all objects)")
    p.add_argument("--dump-predictions", metavar="PREDS.jsonl",
                   help="also write every query's binarised prediction (COCO RLE) as JSON lines, "
                        "for re-scoring with tools/evaluate.py (docs/evaluation.md)")
    p.add_argument("--overwrite-dump", action="store_true",
                   help="replace an existing --dump-predictions file")
    p.add_argument("--strict-meta", action="store_true",
                   help="refuse a checkpoint whose recorded model (head, backbone, mask source types) differs "
                        "from the config's; without it that is a warning")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    return p.parse_args(argv)


def group_by_benchmark(metrics: dict) -> dict[str, dict]:
    """``{"res/gIoU": x, "gres/N-acc": y}`` -> ``{"res": {"gIoU": x}, "gres": {"N-acc": y}}``."""
    out: dict[str, dict] = {}
    for k, v in metrics.items():
        bench, _, name = k.partition("/") if "/" in k else ("metrics", "", k)
        out.setdefault(bench, {})[name] = v
    return out


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4f}"
    return str(v)


def format_tables(metrics: dict, baselines: dict | None = None, title: str = "") -> str:
    """One table per benchmark: rows are metrics, columns the model and each baseline."""
    baselines = baselines or {}
    cols = ["model"] + list(baselines)
    grouped = {"model": group_by_benchmark(metrics)}
    grouped.update({b: group_by_benchmark(m) for b, m in baselines.items()})
    blocks = [title] if title else []
    for bench, rows in grouped["model"].items():
        names = [n for n, v in rows.items() if isinstance(v, (int, float))]
        w = max([len(n) for n in names] + [len(bench)])
        cw = max(10, *(len(c) for c in cols))
        lines = [f"{bench:<{w}}  " + "  ".join(f"{c:>{cw}}" for c in cols), "-" * (w + 2 + (cw + 2) * len(cols))]
        for n in names:
            vals = [grouped.get(c, {}).get(bench, {}).get(n, "") for c in cols]
            lines.append(f"{n:<{w}}  " + "  ".join(f"{_fmt(v):>{cw}}" for v in vals))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in ((args.config, "config"), (args.checkpoint, "checkpoint")):
        if not os.path.isfile(path):
            sys.exit(f"error: {what} file {path!r} does not exist")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        from reseg.cfg_options import describe_rewrites, merge_cfg_options

        note = describe_rewrites(merge_cfg_options(cfg, args.cfg_options))
        if note:
            print(note)
    if args.generate:
        cfg.model.val_mode = "generate"
    cfg.load_from = None  # loaded strictly below (mmengine's load_from warns and goes on when keys differ)
    if args.dump_predictions:
        if os.path.exists(args.dump_predictions) and not args.overwrite_dump:
            sys.exit(f"error: {args.dump_predictions!r} exists; pass --overwrite-dump to replace it")
        hooks = list(cfg.get("custom_hooks", None) or [])
        hooks.append(dict(type="DumpPredictionsHook", out_file=args.dump_predictions,
                          overwrite=args.overwrite_dump))
        cfg.custom_hooks = hooks
    if args.show_dir:
        hooks = list(cfg.get("custom_hooks", None) or [])
        hooks.append(dict(type="SegVisualizationHook", out_dir=args.show_dir, max_images=args.max_vis))
        cfg.custom_hooks = hooks

    from reseg.engine.config_check import ConfigRefused
    from reseg.engine.runner import build_runner

    work_dir = args.work_dir or os.path.join("work_dirs", os.path.splitext(os.path.basename(args.config))[0])
    try:
        runner = build_runner(cfg, work_dir=work_dir, launcher=args.launcher, training=False)
    except ConfigRefused as err:
        sys.exit("\n".join(f"error: {args.config}: {line}" for line in str(err).splitlines()))
    except FileNotFoundError as err:  # weights the config names (the message names the key and the file)
        sys.exit(f"error: {args.config}: {err}")
    from mmengine.model import is_model_wrapper

    from reseg.engine.checkpoint import describe_model_differences, load_model_weights
    from reseg.engine.runner import remove_test_log

    try:
        report = load_model_weights(runner.model.module if is_model_wrapper(runner.model) else runner.model,
                                    args.checkpoint, model_cfg=cfg.model)
    except (ValueError, RuntimeError) as err:
        remove_test_log(runner)  # nothing was tested: no log folder is left behind
        sys.exit(f"error: {err}")
    if report["model_differences"]:  # another head's weights can fit the keys exactly (LISA's and READ's do)
        msg = describe_model_differences(args.checkpoint, report["model_differences"])
        if args.strict_meta:
            remove_test_log(runner)
            sys.exit(f"error: {msg} (--strict-meta)")
        print(f"warning: {msg}; the scores below are of the config's model with these weights "
              "(--strict-meta refuses)", file=sys.stderr, flush=True)
    try:
        metrics = runner.test()
    except FileNotFoundError as err:  # a data file the datasets read (the message names it)
        remove_test_log(runner)
        sys.exit(f"error: {args.config}: {err}")
    metrics = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, int) else v) for k, v in metrics.items()}
    from reseg.evaluation import evaluator_conventions

    result = dict(config=os.path.abspath(args.config), checkpoint=os.path.abspath(args.checkpoint),
                  val_mode=cfg.model.get("val_mode", "teacher_forcing"), metrics=metrics,
                  conventions=evaluator_conventions(runner.test_evaluator),
                  evaluator=cfg.get("test_evaluator"))
    if args.baselines:
        from reseg.evaluation.baselines import evaluate_baselines

        result["baselines"] = evaluate_baselines(runner.test_dataloader.dataset, cfg.get("test_evaluator"))
    result["benchmarks"] = group_by_benchmark(metrics)
    if runner.rank == 0:
        title = f"{os.path.basename(args.config)} | {os.path.basename(args.checkpoint)} | {result['val_mode']}"
        print(format_tables(metrics, result.get("baselines"), title))
        if args.out_metrics:
            from reseg.fileio import atomic_write_bytes

            atomic_write_bytes(args.out_metrics, json.dumps(result, indent=2, default=str).encode())
            print(f"metrics written to {args.out_metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
