"""Prediction dumps: one JSON line per query, re-scored offline with the same metrics.

``tools/test.py CONFIG CKPT --dump-predictions preds.jsonl`` adds a :class:`DumpPredictionsHook`,
which writes every query's prediction (binarised, COCO RLE) once the test loop ends;
``tools/evaluate.py preds.jsonl --config CONFIG`` builds the config's test dataset and evaluator and
re-scores the dump (:func:`rescore`), with any metric option changed (``--metric-options
nt_mode=gsva``). Because the masks are binarised *before* dumping, with the threshold the metrics
use, re-scoring a dump gives exactly the numbers of scoring in process. The same format lets an
external model be scored by reseg's metrics: write the lines yourself (schema in
``docs/evaluation.md``).

A line (:meth:`PredictionDumper.encode_sample`)::

    {"sample_id": "refcoco|unc|val|42", "dataset": "refcoco", "split": "val", "task": "res",
     "query_index": 0, "query": "the man on the left",
     "mask_rle": {"size": [H, W], "counts": "..."}, "first_mask_rle": null, "num_masks": 1,
     "threshold": 0.0, "inclusive_threshold": false,
     "exists": true, "text": "", "selected": null, "selected_pool": null, "scores": [0.93]}

Next to ``preds.jsonl`` the hook writes ``preds.jsonl.meta.json``: the format version, the
threshold, the config file, checkpoint, test dataset and evaluator configs and the metrics'
conventions (for the record; re-scoring reads the config given to ``tools/evaluate.py``).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from mmengine.hooks import Hook

from reseg.evaluation.functional import binarize_stack
from reseg.fileio import iter_json_objects
from reseg.masks.rle import decode_rle, encode_rle
from reseg.registry import HOOKS
from reseg.structures import QueryPrediction, Sample

#: Format tag written in the ``.meta.json`` sidecar.
DUMP_FORMAT = "reseg-predictions/1"

#: ``sample_id -> query_index -> record``, as :func:`load_predictions` returns.
PredictionTable = dict[str, dict[int, dict[str, Any]]]


def meta_path(path: str) -> str:
    """The sidecar of a dump: ``<path>.meta.json``."""
    return path + ".meta.json"


# -- masks <-> COCO RLE (reseg.masks.rle) -----------------------------------------------------------

#: ``{"size": [H, W], "counts": str}`` of a ``[H, W]`` mask: the codec every mask file uses.
encode_mask = encode_rle


def decode_mask(rle: Mapping[str, Any], where: str = "mask RLE") -> np.ndarray:
    """``[H, W] bool`` from a COCO RLE (``counts`` as str or bytes, or an uncompressed list); a
    malformed RLE is a ``ValueError`` naming ``where``."""
    return decode_rle(rle, where)


# -- writing ---------------------------------------------------------------------------------------

def _atomic_write(path: str, text: str, overwrite: bool) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never a half file)."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite-dump) to replace it.")
    from reseg.fileio import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


class PredictionDumper:
    """Collects one JSON record per query and writes them as JSON lines, atomically.

    Args:
        path: the ``.jsonl`` file to write.
        threshold: logit threshold the masks are binarised with before encoding; use the metrics'.
        inclusive_threshold: ``logits >= threshold`` instead of ``>``.
        overwrite: replace an existing file. Without it, an existing ``path`` is an error, raised
            here already (before any model runs) and again when writing.
    """

    def __init__(
        self,
        path: str,
        threshold: float = 0.0,
        inclusive_threshold: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.path = str(path)
        self.threshold = float(threshold)
        self.inclusive_threshold = bool(inclusive_threshold)
        self.overwrite = bool(overwrite)
        if os.path.exists(self.path) and not self.overwrite:
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True (--overwrite-dump) to replace it."
            )
        #: One list of records per sample, in the order seen (one entry per dataset item, so a
        #: distributed gather can drop the sampler's padding exactly like the metrics do).
        self.entries: list[list[dict[str, Any]]] = []

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for entry in self.entries for r in entry]

    def encode_sample(self, sample: Sample, output: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The records of one sample's queries (see the module docstring for the schema)."""
        predictions = list(output["predictions"])
        if len(predictions) != len(sample.queries):
            raise ValueError(
                f"sample {sample.sample_id!r} has {len(sample.queries)} queries but the model "
                f"returned {len(predictions)} predictions."
            )
        out_id = output.get("sample_id")
        if out_id is not None and str(out_id) != sample.sample_id:
            raise ValueError(
                f"model output for sample {out_id!r} is paired with sample {sample.sample_id!r}."
            )
        records = []
        for q_idx, (query, pred) in enumerate(zip(sample.queries, predictions)):
            masks = binarize_stack(pred.masks, self.threshold, self.inclusive_threshold)
            if tuple(masks.shape[1:]) != sample.size:
                raise ValueError(
                    f"sample {sample.sample_id!r}, query {q_idx}: predicted masks are "
                    f"{tuple(masks.shape[1:])}, not at the image size {sample.size}."
                )
            union = masks.any(axis=0) if masks.shape[0] else np.zeros(sample.size, dtype=bool)
            first = None
            if masks.shape[0] > 1 and not np.array_equal(masks[0], union):
                first = encode_mask(masks[0])
            records.append(
                {
                    "sample_id": sample.sample_id,
                    "dataset": sample.meta.get("dataset"),
                    "split": sample.meta.get("split"),
                    "task": sample.task,
                    "query_index": q_idx,
                    "query": query.text,
                    "mask_rle": encode_mask(union),
                    "first_mask_rle": first,
                    "num_masks": int(masks.shape[0]),
                    "threshold": self.threshold,
                    "inclusive_threshold": self.inclusive_threshold,
                    "exists": bool(pred.exists),
                    "text": str(pred.text or ""),
                    "selected": None if pred.selected is None else [int(i) for i in pred.selected],
                    "selected_pool": _selected_pool(pred, sample),
                    "scores": _float_list(pred.scores),
                }
            )
        return records

    def add(self, data_batch: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]]) -> None:
        """Encode a batch: ``data_batch = dict(samples=...)`` and the model's outputs, in order."""
        samples = list(data_batch["samples"])
        if len(samples) != len(outputs):
            raise ValueError(
                f"PredictionDumper.add got {len(samples)} samples but {len(outputs)} outputs."
            )
        for sample, output in zip(samples, outputs):
            self.entries.append(self.encode_sample(sample, output))

    def write(
        self,
        entries: Iterable[Sequence[Mapping[str, Any]]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """Write the records (``entries``, default the collected ones) and, with ``meta``, the sidecar.

        Returns:
            the path written.
        """
        if os.path.exists(self.path) and not self.overwrite:
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True (--overwrite-dump) to replace it."
            )
        entries = self.entries if entries is None else list(entries)
        lines = [json.dumps(r, separators=(",", ":")) for entry in entries for r in entry]
        if meta is not None:
            full = {
                "format": DUMP_FORMAT,
                "threshold": self.threshold,
                "inclusive_threshold": self.inclusive_threshold,
                "num_samples": len(entries),
                "num_queries": len(lines),
                **dict(meta),
            }
            _atomic_write(
                meta_path(self.path), json.dumps(full, indent=2, default=str) + "\n", True
            )
        _atomic_write(self.path, "".join(line + "\n" for line in lines), self.overwrite)
        return self.path


def _float_list(scores: Any) -> list[float] | None:
    if scores is None:
        return None
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    return [float(v) for v in np.asarray(scores, dtype=np.float64).reshape(-1)]


# -- reading and re-scoring ------------------------------------------------------------------------

def build_dataset(cfg: Mapping[str, Any], scope: str = "reseg") -> Any:
    """Build a dataset config (a reseg loader or an mmengine ``ConcatDataset`` of them).

    mmengine's wrappers build their children through mmengine's root registry, which finds reseg's
    loaders only under the ``reseg`` default scope; this sets it for the duration of the build.
    """
    from mmengine.registry import DefaultScope

    from reseg.registry import DATASETS

    with DefaultScope.overwrite_default_scope(scope):
        return DATASETS.build(dict(cfg))


def load_predictions(path: str) -> PredictionTable:
    """Read a dump into ``sample_id -> query_index -> record``, checking every line.

    Required per line: ``sample_id`` (str), ``query_index`` (int >= 0) and ``mask_rle`` (an RLE,
    or null for "no mask"). Duplicated (sample_id, query_index) pairs are an error.
    """
    table: PredictionTable = {}
    for _, where, rec in iter_json_objects(path, "a prediction record (docs/evaluation.md)"):
        for key in ("sample_id", "query_index", "mask_rle"):
            if key not in rec:
                raise ValueError(f"{where}: missing required key {key!r} (docs/evaluation.md).")
        q = rec["query_index"]
        if isinstance(q, bool) or not isinstance(q, int) or q < 0:
            raise ValueError(f"{where}: query_index must be an int >= 0, got {q!r}.")
        sid = str(rec["sample_id"])
        per_sample = table.setdefault(sid, {})
        if q in per_sample:
            raise ValueError(f"{where}: duplicate prediction for sample {sid!r}, query {q}.")
        per_sample[q] = rec
    return table


def _selected_pool(pred: QueryPrediction, sample: Sample) -> str | None:
    """Which pool a selection indexes: ``'dataset'`` (the sample's own candidates) or ``'model'`` (a pool
    the model proposed itself, which the dump does not keep); None without a selection."""
    if pred.selected is None:
        return None
    own = sample.candidate_masks
    if pred.pool is None or (own is not None and np.shape(own) == np.shape(pred.pool)
                             and np.array_equal(np.asarray(own, dtype=bool), np.asarray(pred.pool, dtype=bool))):
        return "dataset"
    return "model"


def record_to_prediction(
    record: Mapping[str, Any] | None, size: tuple[int, int]
) -> QueryPrediction:
    """The :class:`QueryPrediction` a record stands for (bool masks at ``size``).

    ``masks`` is ``[0, H, W]`` when the model emitted none (``num_masks == 0`` or ``mask_rle``
    null), ``[first, union]`` when the first mask differs from the union, else ``[union]``: exactly
    what the metrics need (the union; SESAME's first mask). A missing record (None) is an answer
    with no mask (``exists=True``).
    """
    h, w = size
    if record is None:
        return QueryPrediction(masks=np.zeros((0, h, w), dtype=bool))
    where = f"sample {record.get('sample_id')!r}, query {record.get('query_index')}"
    rle = record.get("mask_rle")
    union = decode_mask(rle, f"{where}: mask_rle") if rle is not None else np.zeros((h, w), dtype=bool)
    if tuple(union.shape) != (h, w):
        raise ValueError(
            f"{where}: the dumped mask is {tuple(union.shape)} but the image is {(h, w)}."
        )
    num = record.get("num_masks")
    num = (0 if rle is None else 1) if num is None else int(num)
    if num == 0:
        masks = np.zeros((0, h, w), dtype=bool)
    elif record.get("first_mask_rle") is not None:
        masks = np.stack([decode_mask(record["first_mask_rle"], f"{where}: first_mask_rle"), union])
    else:
        masks = union[None]
    selected = record.get("selected")
    selected = None if selected is None else [int(i) for i in selected]
    pool = None
    if selected and record.get("selected_pool") == "model":
        # the model selected from its own pool, which the dump does not keep: a stand-in pool whose
        # selected entries are the dumped union, so scoring the selection scores what the model answered
        pool = np.broadcast_to(union, (max(selected) + 1, h, w))
    return QueryPrediction(
        masks=masks,
        scores=None if record.get("scores") is None else np.asarray(record["scores"], np.float32),
        exists=bool(record.get("exists", True)),
        text=str(record.get("text") or ""),
        selected=selected,
        pool=pool,
    )


def rescore(
    dataset: Any,
    metrics: Sequence[Any],
    table: PredictionTable,
    missing: str = "error",
    check_text: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score a prediction table on ``dataset`` with ``metrics``, matching by sample id and query index.

    Args:
        dataset: anything with ``len`` and ``[i] -> Sample`` (a reseg loader, an mmengine
            ``ConcatDataset``), in test mode.
        metrics: built metrics (fresh: their ``results`` are consumed).
        table: from :func:`load_predictions`.
        missing: ``"error"`` (default): every query of the dataset must have a prediction;
            ``"empty"``: a missing one is an answer with no mask (counted in the report).
        check_text: a record's ``query`` text, when present, must equal the sample's query text
            (catches a dataset whose query order changed since the dump).

    Returns:
        ``(metrics, report)``: the merged ``evaluate`` outputs and ``{"n_samples", "n_queries",
        "n_missing", "n_unmatched_samples"}`` (predictions whose sample id is not in the dataset).
    """
    if missing not in ("error", "empty"):
        raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}.")
    n = len(dataset)
    seen: set[str] = set()
    missing_keys: list[tuple[str, int]] = []
    n_queries = 0
    for i in range(n):
        sample = dataset[i]
        sid = sample.sample_id
        if sid in seen:
            raise ValueError(
                f"dataset item {i} repeats sample id {sid!r}; predictions are matched by sample id, "
                "so the test dataset must not contain a sample twice."
            )
        seen.add(sid)
        records = table.get(sid, {})
        extra = sorted(q for q in records if q >= len(sample.queries))
        if extra:
            raise ValueError(
                f"sample {sid!r} has {len(sample.queries)} queries but the dump has predictions "
                f"for query index {extra}."
            )
        predictions = []
        for q_idx, query in enumerate(sample.queries):
            rec = records.get(q_idx)
            if rec is None:
                missing_keys.append((sid, q_idx))
            elif check_text and rec.get("query") is not None and rec["query"] != query.text:
                raise ValueError(
                    f"sample {sid!r}, query {q_idx}: the dump's query {rec['query']!r} is not the "
                    f"dataset's {query.text!r}; was the dump made with another dataset config?"
                )
            predictions.append(record_to_prediction(rec, sample.size))
        n_queries += len(sample.queries)
        if missing_keys and missing == "error":
            continue  # keep scanning to report every missing query at once
        output = {"sample_id": sid, "predictions": predictions}
        for metric in metrics:
            metric.process({"samples": [sample]}, [output])
    if missing_keys and missing == "error":
        shown = ", ".join(f"{s}#{q}" for s, q in missing_keys[:5])
        raise ValueError(
            f"{len(missing_keys)} of {n_queries} queries have no prediction in the dump "
            f"(first: {shown}); pass missing='empty' (--missing empty) to score them as empty."
        )
    unmatched = sorted(set(table) - seen)
    if unmatched:
        warnings.warn(
            f"{len(unmatched)} sample ids of the dump are not in the dataset (first: "
            f"{unmatched[:3]}); they are ignored.",
            stacklevel=2,
        )
    scores: dict[str, Any] = {}
    for metric in metrics:
        scores.update(metric.evaluate(n))
    report = {
        "n_samples": n,
        "n_queries": n_queries,
        "n_missing": len(missing_keys),
        "n_unmatched_samples": len(unmatched),
    }
    return scores, report


def dump_threshold_mismatches(table: PredictionTable, metrics: Sequence[Any]) -> list[str]:
    """Messages for metrics whose binarisation differs from the dump's (the dump's one applies)."""
    dumped = {
        (float(r.get("threshold", 0.0)), bool(r.get("inclusive_threshold", False)))
        for per in table.values()
        for r in per.values()
        if "threshold" in r
    }
    out = []
    for m in metrics:
        if not hasattr(m, "threshold") or getattr(m, "needs_predictions", True) is False:
            continue
        mine = (float(m.threshold), bool(getattr(m, "inclusive_threshold", False)))
        if dumped and dumped != {mine}:
            out.append(
                f"{type(m).__name__} binarises at (threshold, inclusive) = {mine} but the dump was "
                f"binarised at {sorted(dumped)}; the dumped binary masks are scored as they are."
            )
    return out


# -- the runner hook -------------------------------------------------------------------------------

def _metric_binarisation(metrics: Iterable[Any]) -> tuple[float, bool] | None:
    """The one (threshold, inclusive) the metrics share; None if none binarises; error if they differ."""
    seen = {
        (float(m.threshold), bool(getattr(m, "inclusive_threshold", False)))
        for m in metrics
        if hasattr(m, "threshold") and getattr(m, "needs_predictions", True)
    }
    if len(seen) > 1:
        raise ValueError(
            f"the test metrics binarise masks differently {sorted(seen)}; a dump holds one binary "
            "mask per query, so give DumpPredictionsHook an explicit threshold/inclusive_threshold."
        )
    return next(iter(seen)) if seen else None


@HOOKS.register_module()
class DumpPredictionsHook(Hook):
    """Write every test prediction to a JSON-lines dump (:class:`PredictionDumper`) at the end of test.

    Records are kept per sample during the loop (RLE strings, never logits) and gathered across
    ranks like metric results (``collect_results`` with the dataset size), so every dataset item is
    written exactly once, in dataset order; rank 0 writes the file (temporary file + rename) and its
    ``.meta.json`` sidecar.

    Args:
        out_file: the ``.jsonl`` path.
        threshold, inclusive_threshold: binarisation; None takes the test metrics' (they must agree;
            0.0 / False when no metric binarises).
        overwrite: replace an existing ``out_file`` (otherwise an error, raised when the hook is
            built, before the model runs).
    """

    priority = "LOW"

    def __init__(
        self,
        out_file: str,
        threshold: float | None = None,
        inclusive_threshold: bool | None = None,
        overwrite: bool = False,
    ) -> None:
        if os.path.exists(out_file) and not overwrite:
            raise FileExistsError(
                f"{out_file} exists; pass overwrite=True (--overwrite-dump) to replace it."
            )
        self.out_file = out_file
        self.threshold = threshold
        self.inclusive_threshold = inclusive_threshold
        self.overwrite = bool(overwrite)
        self.dumper: PredictionDumper | None = None

    def before_test(self, runner) -> None:
        shared = (0.0, False)
        if self.threshold is None or self.inclusive_threshold is None:
            metrics = getattr(getattr(runner, "test_evaluator", None), "metrics", [])
            shared = _metric_binarisation(metrics) or shared
        thr = shared[0] if self.threshold is None else float(self.threshold)
        inc = shared[1] if self.inclusive_threshold is None else bool(self.inclusive_threshold)
        self.dumper = PredictionDumper(self.out_file, thr, inc, overwrite=self.overwrite)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.dumper is None:
            self.before_test(runner)
        assert self.dumper is not None
        self.dumper.add(data_batch, outputs)

    def after_test_epoch(self, runner, metrics=None) -> None:
        from mmengine.dist import collect_results, is_main_process

        if self.dumper is None:
            return
        size = len(runner.test_dataloader.dataset)
        entries = collect_results(self.dumper.entries, size, "cpu")
        if is_main_process():
            from reseg.evaluation.metrics import evaluator_conventions

            cfg = runner.cfg
            meta = {
                "config": getattr(cfg, "filename", None),
                "checkpoint": cfg.get("load_from"),
                "test_dataset": _plain_cfg(cfg.get("test_dataloader", {}).get("dataset")),
                "test_evaluator": _plain_cfg(cfg.get("test_evaluator")),
                "conventions": evaluator_conventions(runner.test_evaluator),
                "val_mode": _plain_cfg(cfg.get("model", {}).get("val_mode")),
            }
            path = self.dumper.write(entries, meta=meta)
            runner.logger.info(f"predictions of {len(entries)} samples written to {path}")
        self.dumper = None


def _plain_cfg(obj: Any) -> Any:
    """A config value as JSON-friendly data (types named by their import path)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain_cfg(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_cfg(v) for v in obj]
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
