"""Re-score a prediction dump offline: ``python tools/evaluate.py preds.jsonl --config CONFIG``.

Builds the config's test dataset (``test_dataloader.dataset``; ``--split val`` for the val one) and
evaluator (``test_evaluator``), matches the dump's lines to the samples by ``sample_id`` and query
index, and prints (``--out-metrics``: writes) the same metrics ``tools/test.py`` reports, with the
conventions they were computed under. Dumps come from ``tools/test.py --dump-predictions`` or from
any other model written in the same schema (``docs/evaluation.md``).

Options:
  --cfg-options k=v ...      override config keys (e.g. the dataset root)
  --metric-options k=v ...   set a metric option on every metric that has it
                             (``nt_mode=gsva``, ``eval_size=480,480``, ``GRESMetric.grefcoco=false``)
  --missing error|empty      a query without prediction is an error (default) or an empty answer
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from typing import Any

from mmengine.config import Config

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Re-score a reseg prediction dump (JSON lines)")
    p.add_argument("predictions", help="the .jsonl dump")
    p.add_argument("--config", help="config whose test dataset/evaluator to use "
                                    "(default: the one recorded in <predictions>.meta.json)")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="use <split>_dataloader.dataset and <split>_evaluator (default test)")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    p.add_argument("--metric-options", nargs="+", action=KeyValueAction, default=None,
                   help="metric constructor options, k=v or MetricType.k=v")
    p.add_argument("--missing", choices=["error", "empty"], default="error",
                   help="a dataset query without a prediction: error (default) or an empty answer")
    p.add_argument("--out-metrics", help="write metrics, conventions and counts as JSON here")
    return p.parse_args(argv)


def accepted_options(cls: type) -> set[str]:
    """Constructor keywords of a metric class, following ``**kwargs`` up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    names.discard("self")
    return names


def metric_configs(evaluator_cfg: Any) -> list[dict]:
    """The metric configs of an evaluator config (a metric dict, a list, or ``dict(metrics=...)``)."""
    if evaluator_cfg is None:
        raise SystemExit("error: the config has no evaluator for this split")
    if isinstance(evaluator_cfg, dict) and "type" not in evaluator_cfg and "metrics" in evaluator_cfg:
        evaluator_cfg = evaluator_cfg["metrics"]
    if isinstance(evaluator_cfg, dict):
        evaluator_cfg = [evaluator_cfg]
    return [dict(c) for c in evaluator_cfg]


def apply_metric_options(cfgs: list[dict], options: dict, registry) -> list[dict]:
    """Set each option on the metrics that accept it; an option no metric accepts is an error."""
    used = dict.fromkeys(options, False)
    out = []
    for c in cfgs:
        c = dict(c)
        cls = registry.get(c["type"]) if isinstance(c["type"], str) else c["type"]
        accepted = accepted_options(cls)
        for key, value in options.items():
            target, _, name = key.rpartition(".")
            if target and target != cls.__name__:
                continue
            if name in accepted:
                c[name] = value
                used[key] = True
        out.append(c)
    unused = [k for k, ok in used.items() if not ok]
    if unused:
        kinds = ", ".join(str(c["type"]) for c in cfgs)
        raise SystemExit(f"error: no metric of this evaluator ({kinds}) has option(s) {unused}")
    return out


def format_table(metrics: dict, title: str) -> str:
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()
            if isinstance(v, (int, float))]
    w = max([len(k) for k, _ in rows] + [len(title)])
    return "\n".join([title, "-" * (w + 12)] + [f"{k:<{w}}  {v:>9}" for k, v in rows])


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.predictions):
        sys.exit(f"error: predictions file {args.predictions!r} does not exist")
    from reseg.evaluation.dump import meta_path

    config = args.config
    if config is None and os.path.isfile(meta_path(args.predictions)):
        with open(meta_path(args.predictions), encoding="utf-8") as f:
            config = json.load(f).get("config")
    if not config or not os.path.isfile(config):
        sys.exit(f"error: config file {config!r} does not exist (pass --config)")
    cfg = Config.fromfile(config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)

    from reseg.plugins import load_plugins

    load_plugins()
    import reseg.datasets
    import reseg.evaluation  # noqa: F401  (register metrics)
    from reseg.evaluation.dump import (
        build_dataset,
        dump_threshold_mismatches,
        load_predictions,
        rescore,
    )
    from reseg.evaluation.metrics import evaluator_conventions
    from reseg.registry import METRICS

    loader = cfg.get(f"{args.split}_dataloader")
    if not loader or "dataset" not in loader:
        sys.exit(f"error: the config has no {args.split}_dataloader.dataset")
    dataset = build_dataset(loader["dataset"], scope=cfg.get("default_scope", "reseg"))
    cfgs = metric_configs(cfg.get(f"{args.split}_evaluator"))
    if args.metric_options:
        cfgs = apply_metric_options(cfgs, dict(args.metric_options), METRICS)
    metrics = [METRICS.build(c) for c in cfgs]

    table = load_predictions(args.predictions)
    for message in dump_threshold_mismatches(table, metrics):
        print(f"warning: {message}", file=sys.stderr)
    scores, report = rescore(dataset, metrics, table, missing=args.missing)
    scores = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, int) else v)
              for k, v in scores.items()}
    print(format_table(scores, f"{os.path.basename(args.predictions)} | {os.path.basename(config)}"))
    print(", ".join(f"{k}={v}" for k, v in report.items()))
    if args.out_metrics:
        result = dict(predictions=os.path.abspath(args.predictions), config=os.path.abspath(config),
                      split=args.split, metrics=scores, report=report,
                      conventions=evaluator_conventions(metrics))
        os.makedirs(os.path.dirname(os.path.abspath(args.out_metrics)), exist_ok=True)
        tmp = f"{args.out_metrics}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=str)
        os.replace(tmp, args.out_metrics)
        print(f"metrics written to {args.out_metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
