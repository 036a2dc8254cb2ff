#!/usr/bin/env python
"""Speed and memory of a reseg training step, measured (results go to docs/benchmarks.md).

    python tools/benchmark.py overhead CONFIG [--iters 20] [--warmup 3] [--cfg-options k=v ...]
    python tools/benchmark.py memory   CONFIG [--iters 4] [--variant NAME k=v ...]... [--cfg-options ...]
    python tools/benchmark.py mfu      CONFIG [--iters 4] [--cfg-options ...]
    python tools/benchmark.py ras      RAS_CONFIG --checkpoint C --ar-config AR_CONFIG --ar-checkpoint C2
                                       [--pool-sizes 16 32 64] [--queries 60]
    python tools/benchmark.py generate CONFIG [--checkpoint C] [--batch-sizes 1 8] [--queries 32]
                                       [--max-new-tokens 32]
    python tools/benchmark.py prefix   CONFIG [--queries-per-image 3] [--iters 5] [--warmup 1]
    python tools/benchmark.py prefix-flops [--scale 7b] [--queries-per-image 1 3 10] [--images 2]
                                       [--prefix-tokens 610] [--suffix-tokens 48]

* ``overhead``: the platform's training iteration (mmengine ``Runner``: hooks, ``train_step``,
  ``parse_losses``, ``OptimWrapper`` with clipping, parameter schedulers) against a bare PyTorch loop
  over the same model, optimizer, clipping and dataloader (forward, sum of the ``loss*`` terms,
  backward, clip, step, zero_grad; nothing else). Timed as bare, platform, bare in one process; the
  ratio is platform / mean(bare). Target <= 1.05.
* ``memory``: each variant (a set of config overrides, e.g. gradient checkpointing or LoRA) runs in
  a fresh process, so its peak resident memory (``ru_maxrss``; a CPU process cannot reset it) is its
  own; it reports peak RSS, the RSS growth during training steps, trainable parameters and the
  median step time. ``--variant`` repeats; without it a standard set of switches is measured.
* ``mfu``: FLOPs of one forward+backward (``torch.utils.flop_counter``), the achieved FLOP/s, this
  machine's measured fp32 matmul FLOP/s, their ratio (model FLOP utilisation) and where a step's
  time goes (data, shared image encoders + tokenising, LLM, head/decoder + losses, backward, step).

* ``ras``: RAS's single-pass selection against the autoregressive baseline (anchorseg_ras.md
  §2.2: 0.56 s vs 2.13 s, a 3.8x ratio, in the paper). Both models answer the same validation queries
  with the same pool of exactly N candidates per image (the dataset's pool, padded with shifted copies
  of its own masks and cut to N, seeded); per query, the wall time of ``model.predict`` on one image
  and one query (batch 1, no grad: pool tokens, the LMM, selection or generation) and the cIoU/gIoU of
  the union of the selected candidates. The ratio is AR / RAS median latency per N. Each model's
  mean time per stage (vision tower, mask tokens, LMM forward or generation, other) shows where a
  prediction's time goes.

* ``generate``: free generation, the same validation queries (one query per sample, in the same
  order) answered at each batch size (``model.predict(..., generate=True)`` on ``b`` samples at a
  time): queries per second, the ratio to the first batch size, the answers' length (their text
  re-tokenised) and the share of answers holding a mask token. The answers at every batch size must
  equal those of the first (the run fails otherwise), so the speed-up is not bought with other answers.

* ``prefix``: a training step with LISA's recipe (LoRA r=8 on q/v, ``lm_head`` and ``embed_tokens``
  trained, the vision tower and projector frozen, gradient checkpointing in the LLM; :data:`LISA_RECIPE`,
  before ``--cfg-options``) on batches whose every image has exactly ``--queries-per-image``
  queries, three ways on the same model and batches: ``shared`` (the LLM's image prefix once per
  image, ``model.lmm.share_image_prefix=True``), ``unshared`` (every conversation runs the LLM in
  full; the vision tower still once per image) and ``per_conversation`` (LISA's own training code:
  each conversation carries its own copy of the image through the vision tower and the LLM, SAM's
  image encoder once per image; :func:`tower_per_conversation`). Per way: the FLOPs of one step
  (forward + backward, ``torch.utils.flop_counter``; the checkpointed recomputation included) and
  the LLM's share of them, the peak memory of the tensors the forward + backward allocates
  (:class:`TensorPeak`), and the median time of a step (forward, backward, clipping, AdamW step).
  The ways take turns step by step (the order rotating), so a change of the machine's load hits all
  three alike; the ratios are per_conversation / shared and unshared / shared.

* ``prefix-flops``: the FLOPs of the same three ways at a scale this machine cannot run (``7b``:
  LISA-7B's parts, :data:`SCALES`), counted by ``torch.utils.flop_counter`` on the meta device (shapes
  only: no weights, no arithmetic). Per step of ``--images`` images with ``--queries-per-image``
  conversations each, all of ``--prefix-tokens`` tokens through the last image token and
  ``--suffix-tokens`` after it: the LLM's forward + backward under LISA's recipe (plain, or the
  checkpointed shared prefix of :mod:`reseg.models.lmm.shared_prefix`), the vision tower and
  projector (forward; per image, or per conversation for LISA's layout) and SAM's image encoder
  (forward, per image). SAM's prompt encoder and decoder and the losses are left out.

Absolute times depend on the machine and whatever else runs on it; compare ratios from one run.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import weakref
from typing import Any

import torch
from mmengine.config import Config

from reseg.cfg_options import KeyValueAction

#: The switches ``memory`` measures when no ``--variant`` is given (the memory presets that a
#: CPU can show; bf16 and ZeRO need CUDA).
DEFAULT_VARIANTS = {
    "as configured": [],
    "gradient checkpointing (LLM)": ["model.lmm.gradient_checkpointing=True"],
    "LoRA r=8 q/v + lm_head/embed_tokens (LISA's recipe)": [
        "model.lmm.lora.r=8", "model.lmm.trainable_modules=[lm_head,embed_tokens]"],
    "LoRA + gradient checkpointing": [
        "model.lmm.lora.r=8", "model.lmm.trainable_modules=[lm_head,embed_tokens]",
        "model.lmm.gradient_checkpointing=True"],
    "SAM image encoder trained (not frozen)": ["model.mask_source.freeze_image_encoder=False"],
}


#: LISA's training recipe (spec seg_token_family.md §1.4, its ``train_ds.py``) as config overrides: what
#: ``prefix`` measures (``--cfg-options`` come after these).
LISA_RECIPE = {
    "model.lmm.lora.r": 8,
    "model.lmm.lora.lora_alpha": 16,
    "model.lmm.lora.lora_dropout": 0.05,
    "model.lmm.trainable_modules": ["lm_head", "embed_tokens"],
    "model.lmm.train_vision_tower": False,
    "model.lmm.train_projector": False,
    "model.lmm.gradient_checkpointing": True,
}


def load_cfg(path: str, options: dict | None) -> Config:
    cfg = Config.fromfile(path)
    for key in options or {}:  # `model.lmm.lora.r=8` on a config whose lora is None: start from {}
        parts = key.split(".")
        node = cfg
        for part in parts[:-1]:
            if node.get(part, 0) is None:
                node[part] = {}
            node = node.get(part, {})
            if not hasattr(node, "get"):
                break
    if options:
        cfg.merge_from_dict(options)
    cfg.train_dataloader.num_workers = 0  # data loading in the measured process, the same for both loops
    cfg.train_dataloader.persistent_workers = False
    cfg.train_dataloader.sampler.seed = 0  # every loader built from it yields the same batches
    return cfg


def build(cfg: Config, work_dir: str, iters: int):
    from reseg.engine.runner import build_runner

    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = 10**9
    # no validation at all: mmengine's IterBasedTrainLoop also validates after the last iteration
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint.interval = 10**9
    cfg.default_hooks.checkpoint.save_last = False
    cfg.default_hooks.logger.interval = 10**9
    cfg.param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=iters)]
    return build_runner(cfg, work_dir=work_dir)


def reseed() -> None:
    """The same queries and templates in every measured loop (their number sets a step's work)."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def bare_steps(model, optimizer, loader, n: int, clip: float | None) -> list[float]:
    """The bare PyTorch loop; returns per-step seconds (data loading included)."""
    params = [p for p in model.parameters() if p.requires_grad]
    it = iter(loader)
    times = []
    model.train()
    for _ in range(n):
        t0 = time.perf_counter()
        batch = next(it)
        losses = model(batch["samples"], mode="loss")
        loss = sum(v for k, v in losses.items() if "loss" in k)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def platform_steps(runner) -> list[float]:
    """Per-iteration seconds of ``runner.train()`` (every hook included), from a hook of our own."""
    from mmengine.hooks import Hook

    times: list[float] = []

    class Stopwatch(Hook):
        priority = "HIGHEST"

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.t0 = time.perf_counter()

    class StopwatchEnd(Hook):
        priority = "LOWEST"

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            times.append(time.perf_counter() - sw.t0)

    sw = Stopwatch()
    runner.register_hook(sw)
    runner.register_hook(StopwatchEnd())
    runner.train()
    return times


def cmd_overhead(args) -> dict:
    cfg = load_cfg(args.config, args.cfg_options)
    total = args.warmup + args.iters
    loader_cfg = copy.deepcopy(cfg.train_dataloader)  # mmengine's build_dataloader consumes its dict
    runner = build(cfg, os.path.join(args.work_dir, "overhead"), total)
    model = runner.model
    optim_cfg = cfg.optim_wrapper
    clip = (optim_cfg.get("clip_grad") or {}).get("max_norm")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                            **{k: v for k, v in optim_cfg.optimizer.items() if k != "type"})
    # the same batches in all three loops (fixed sampler seed, RNGs reseeded); the platform's time
    # excludes its data loading (mmengine fetches the batch before before_train_iter), the bare
    # loop's includes it, so the ratio errs in the platform's favour by the data time
    reseed()
    bare1 = bare_steps(model, opt, runner.build_dataloader(copy.deepcopy(loader_cfg)), total, clip)[args.warmup:]
    reseed()
    plat = platform_steps(runner)[args.warmup:]  # warm-up iterations dropped, as for the bare loop
    reseed()
    bare2 = bare_steps(model, opt, runner.build_dataloader(copy.deepcopy(loader_cfg)), total, clip)[args.warmup:]
    bare = statistics.median(bare1 + bare2)
    p = statistics.median(plat)
    return dict(config=args.config, iters=args.iters, bare1_s=[round(t, 3) for t in bare1],
                platform_s=[round(t, 3) for t in plat], bare2_s=[round(t, 3) for t in bare2],
                bare_median_s=round(bare, 4), platform_median_s=round(p, 4),
                ratio=round(p / bare, 3), bare_mean_s=round(statistics.mean(bare1 + bare2), 4),
                platform_mean_s=round(statistics.mean(plat), 4), threads=torch.get_num_threads())


def _probe(args) -> dict:
    """(subprocess) peak RSS and step time of a few bare training steps of one variant."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = load_cfg(args.config, args.cfg_options)
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    runner = build(cfg, os.path.join(args.work_dir, "memory"), args.iters)
    model = runner.model
    loader = runner.build_dataloader(loader_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = bare_steps(model, opt, loader, args.iters, 1.0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(peak_rss_mb=round(rss / 1024, 1), built_rss_mb=round(rss_built / 1024, 1),
                step_growth_mb=round((rss - rss_built) / 1024, 1), start_rss_mb=round(rss0 / 1024, 1),
                trainable_params=sum(p.numel() for p in params),
                total_params=sum(p.numel() for p in model.parameters()),
                step_s=round(statistics.median(times[1:] or times), 3))


def cmd_memory(args) -> dict:
    variants = dict(DEFAULT_VARIANTS) if not args.variant else {v[0]: v[1:] for v in args.variant}
    base = [f"{k}={v}" for k, v in (args.raw_cfg_options or {}).items()]
    rows = {}
    for name, opts in variants.items():
        cmd = [sys.executable, os.path.abspath(__file__), "_probe", args.config, "--iters", str(args.iters),
               "--work-dir", args.work_dir]
        if base or opts:
            cmd += ["--cfg-options", *base, *opts]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows[name] = dict(error=(done.stderr or done.stdout).strip().splitlines()[-1][:300])
            continue
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(config=args.config, iters=args.iters, variants=rows)


def matmul_flops(n: int = 2048, reps: int = 10) -> float:
    """This machine's fp32 matmul FLOP/s (the best of ``reps`` n x n x n products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def cmd_mfu(args) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load_cfg(args.config, args.cfg_options)
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    runner = build(cfg, os.path.join(args.work_dir, "mfu"), args.iters + 1)
    model = seg = runner.model
    loader = runner.build_dataloader(loader_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    it = iter(loader)
    batch = next(it)
    with FlopCounterMode(display=False) as counter:
        losses = model(batch["samples"], mode="loss")
        sum(v for k, v in losses.items() if "loss" in k).backward()
    flops = counter.get_total_flops()
    opt.zero_grad(set_to_none=True)
    phases: dict[str, list[float]] = {k: [] for k in ("data", "encoders+tokenise", "llm", "head+losses",
                                                      "backward", "optimizer")}
    steps = []
    for _ in range(args.iters):
        t = [time.perf_counter()]
        batch = next(it)
        t.append(time.perf_counter())
        ctx = seg.prepare(batch["samples"], "train")
        t.append(time.perf_counter())
        seg.run_lmm(ctx)
        t.append(time.perf_counter())
        losses = seg.head.loss_by_feat(seg.head(ctx), seg.head.get_targets(ctx), ctx)
        t.append(time.perf_counter())
        sum(v for k, v in losses.items() if "loss" in k).backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        for name, a, b in zip(phases, t, t[1:]):
            phases[name].append(b - a)
        steps.append(t[-1] - t[1])  # compute only (data excluded) for the FLOP rate
    step = statistics.median(steps)
    peak = matmul_flops()
    achieved = flops / step
    total = sum(statistics.median(v) for v in phases.values())
    return dict(config=args.config, flops_per_step=flops, compute_step_s=round(step, 4),
                achieved_gflops=round(achieved / 1e9, 2), matmul_peak_gflops=round(peak / 1e9, 2),
                mfu=round(achieved / peak, 4),
                phases={k: dict(s=round(statistics.median(v), 4), share=round(statistics.median(v) / total, 3))
                        for k, v in phases.items()},
                total_params=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads())


def fixed_size_pool(pool, n: int, rng):
    """``[n, H, W] bool``: ``pool`` padded with shifted copies of its own masks (or cut) to exactly ``n``."""
    import numpy as np

    from reseg.datasets.synthref.candidate_pools import shift_mask

    pool = np.asarray(pool, dtype=bool)
    h, w = pool.shape[1:]
    extra = []
    while pool.shape[0] + len(extra) < n:
        src = pool[rng.integers(pool.shape[0])] if pool.shape[0] else np.zeros((h, w), bool)
        extra.append(shift_mask(src, int(rng.integers(-12, 13)), int(rng.integers(-12, 13))))
    out = np.concatenate([pool, np.stack(extra)]) if extra else pool
    return out[:n]


class StageClock:
    """Wall time spent in named methods of a model, by wrapping them on the instance.

    ``wrap(obj, "method", "stage")`` replaces ``obj.method`` with a timed call; ``take()`` returns and
    clears the seconds per stage since the last call. Stages must not nest (their sum is then the
    time accounted for); a method that does not exist is skipped.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, obj: Any, method: str, stage: str) -> None:
        fn = getattr(obj, method, None)
        if fn is None:
            return
        self.seconds.setdefault(stage, 0.0)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[stage] += time.perf_counter() - t0

        setattr(obj, method, timed)

    def take(self) -> dict[str, float]:
        out = dict(self.seconds)
        for k in self.seconds:
            self.seconds[k] = 0.0
        return out


def ras_stage_clock(model) -> StageClock:
    """The stages of one RAS / AR prediction: the vision tower, the candidate pool's mask tokens
    (encoders on the image, mask pooling), the LMM forward pass over the whole sequence (RAS), the
    generation loop (AR) and the selection / parsing; the rest (tokenising, building the sample's
    conversations, the mask projector inside the LMM call) is reported as ``other``."""
    clock = StageClock()
    clock.wrap(model.lmm, "image_features", "vision tower")
    clock.wrap(model.mask_source, "prepare", "mask tokens (encoders + pooling)")
    clock.wrap(model, "run_lmm", "LMM forward")
    clock.wrap(model.lmm, "generate", "LMM generate")
    return clock


def cmd_ras(args) -> dict:
    import dataclasses

    import numpy as np

    from reseg.api import load_model
    from reseg.evaluation.functional import query_stats, summarize_ores
    from reseg.registry import DATASETS

    if not (args.ar_config and args.checkpoint and args.ar_checkpoint):
        raise SystemExit("ras: give --checkpoint (RAS), --ar-config and --ar-checkpoint (the AR baseline)")
    models = {}
    for name, cfg_path, ckpt in (("ras", args.config, args.checkpoint), ("ar", args.ar_config, args.ar_checkpoint)):
        seg = load_model(cfg_path, ckpt, device=args.device, cfg_options=args.raw_cfg_options)
        models[name] = seg.model
    clocks = {name: ras_stage_clock(model) for name, model in models.items()}
    cfg = Config.fromfile(args.config)
    ds_cfg = copy.deepcopy(cfg.val_dataloader.dataset)
    dataset = DATASETS.build(ds_cfg)
    queries = []  # (sample with one query, index)
    for i in range(len(dataset)):
        s = dataset[i]
        for q in s.queries:
            queries.append(dataclasses.replace(s, queries=[q]))
            if len(queries) >= args.queries:
                break
        if len(queries) >= args.queries:
            break
    rows = {}
    for n in args.pool_sizes:
        rng = np.random.default_rng(n)
        batch = []
        for s in queries:
            pool = fixed_size_pool(s.candidate_masks, n, rng)
            q = dataclasses.replace(s.queries[0], pool_labels=None)  # labels of the dataset pool do not apply
            batch.append(dataclasses.replace(s, candidate_masks=pool, queries=[q]))
        times = {name: [] for name in models}
        stages = {name: [] for name in models}
        stats = {name: [] for name in models}
        n_tokens = {name: [] for name in models}
        with torch.no_grad():
            # interleaved per query (RAS, then AR, on the same sample), so a change of the machine's
            # load during the run hits both alike
            for j, s in enumerate(batch[: args.warmup] + batch):
                for name, model in models.items():
                    clocks[name].take()
                    t0 = time.perf_counter()
                    pred = model.predict([s], generate=name == "ar")[0]["predictions"][0]
                    dt = time.perf_counter() - t0
                    if j < args.warmup:
                        continue
                    times[name].append(dt)
                    st = clocks[name].take()
                    st["other"] = dt - sum(st.values())
                    stages[name].append(st)
                    n_tokens[name].append(pred.extras.get("generated_tokens", 0))
                    sel = pred.selected or []
                    union = s.candidate_masks[sel].any(0) if sel else np.zeros(s.size, bool)
                    stats[name].append(query_stats(union, s.queries[0].target, eps=0.0,
                                                   hybrid=s.queries[0].reference_masks is not None))
        row = {}
        for name in models:
            summary = summarize_ores(stats[name])  # the ORES scoring: empty GT + empty prediction = 1
            row[name] = dict(median_s=round(statistics.median(times[name]), 5),
                             mean_s=round(statistics.mean(times[name]), 5),
                             cIoU=round(summary["cIoU"], 4), gIoU=round(summary["gIoU"], 4),
                             mean_generated_tokens=round(float(np.mean(n_tokens[name])), 2),
                             # mean ms per stage (they add up to the mean latency)
                             stages_ms={k: round(1000 * float(np.mean([st[k] for st in stages[name]])), 2)
                                        for k in stages[name][0] if any(st[k] for st in stages[name])})
        row["latency_ratio_ar_over_ras"] = round(row["ar"]["median_s"] / row["ras"]["median_s"], 2)
        rows[str(n)] = row
        print(f"N={n}: {json.dumps(row)}", file=sys.stderr)
    return dict(benchmark="ras_vs_autoregressive", queries=len(queries), pool_sizes=args.pool_sizes,
                threads=torch.get_num_threads(), results=rows)


def cmd_generate(args) -> dict:
    import dataclasses

    from reseg.api import load_model
    from reseg.registry import DATASETS

    if args.checkpoint is None:
        torch.manual_seed(0)  # the config's own weights: the same random model in every run
    seg = load_model(args.config, args.checkpoint, device=args.device, cfg_options=args.raw_cfg_options)
    model = seg.model.eval()
    model.max_new_tokens = args.max_new_tokens
    cfg = Config.fromfile(args.config)
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("reseg"):  # a ConcatDataset builds its parts in this scope
        dataset = DATASETS.build(copy.deepcopy(cfg.val_dataloader.dataset))
    queries = [dataclasses.replace(s, queries=[q]) for i in range(len(dataset)) for s in [dataset[i]]
               for q in s.queries][: args.queries]
    if len(queries) < max(args.batch_sizes):
        raise SystemExit(f"generate: the validation split has {len(queries)} queries, fewer than the largest "
                         f"batch size {max(args.batch_sizes)}")
    mask_tokens = getattr(model.head, "mask_tokens", ())
    rows, reference = {}, None
    for b in args.batch_sizes:
        chunks = [queries[k: k + b] for k in range(0, len(queries), b)]
        answers = []
        with torch.no_grad():
            model.predict(chunks[0], generate=True)  # warm-up
            t0 = time.perf_counter()
            for chunk in chunks:
                answers += [p for r in model.predict(chunk, generate=True) for p in r["predictions"]]
            dt = time.perf_counter() - t0
        texts = [p.text for p in answers]
        if reference is None:
            reference = texts
        elif texts != reference:
            bad = next(k for k, (x, y) in enumerate(zip(texts, reference)) if x != y)
            raise SystemExit(f"generate: at batch size {b}, query {bad} is answered {texts[bad]!r}, not "
                             f"{reference[bad]!r} as at batch size {args.batch_sizes[0]}")
        tokens = [len(model.lmm.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        rows[str(b)] = dict(seconds=round(dt, 4), queries_per_s=round(len(queries) / dt, 3),
                            mean_text_tokens=round(sum(tokens) / len(tokens), 2),  # the answer text re-tokenised
                            answers_with_a_mask=round(sum(any(t in x for t in mask_tokens) for x in texts)
                                                      / len(texts), 3))
        print(f"batch {b}: {json.dumps(rows[str(b)])}", file=sys.stderr)
    base = rows[str(args.batch_sizes[0])]["queries_per_s"]
    for row in rows.values():
        row["speedup"] = round(row["queries_per_s"] / base, 2)
    return dict(benchmark="batched_free_generation", config=args.config, checkpoint=args.checkpoint,
                queries=len(queries), max_new_tokens=args.max_new_tokens, threads=torch.get_num_threads(),
                answers_identical=True, results=rows)


@contextlib.contextmanager
def tower_per_conversation(seg):
    """LISA's own training layout on reseg's model, for the duration of the block.

    LISA's training code gives every conversation its own copy of its image: the vision tower and the
    whole LLM run once per conversation, SAM's image encoder once per image. Here ``prepare`` keeps the
    pixels (and hands the batch zeros where the features were), and the LMM's forward runs the tower
    on each conversation's copy of its image, each conversation its own image (so nothing is shared).
    Yields a namespace with the kept ``pixels`` and the ``tower`` (the LMM's own ``image_features``).
    """
    import types

    lmm = seg.lmm
    kept = types.SimpleNamespace(pixels=None, tower=lmm.image_features)
    forward = lmm.forward

    def keep_pixels(px: torch.Tensor) -> torch.Tensor:
        kept.pixels = px
        return px.new_zeros((px.shape[0], lmm.num_image_tokens, lmm.hidden_size))

    def per_conversation(*args, image_feats, image_index, **kwargs):
        own = torch.arange(len(image_index), device=image_index.device)
        return forward(*args, image_feats=kept.tower(kept.pixels[image_index]), image_index=own, **kwargs)

    lmm.image_features, lmm.forward = keep_pixels, per_conversation
    try:
        yield kept
    finally:
        del lmm.image_features, lmm.forward  # the class's methods again


#: the three ways ``prefix`` runs a step: whether the LMM shares the image prefix, and whether every
#: conversation carries its own copy of the image (LISA's own code)
PREFIX_WAYS = {"shared": (True, False), "unshared": (False, False), "per_conversation": (False, True)}


@contextlib.contextmanager
def prefix_way(seg, way: str):
    share, own_copy = PREFIX_WAYS[way]
    seg.lmm.share_image_prefix = share
    with tower_per_conversation(seg) if own_copy else contextlib.nullcontext() as kept:
        yield kept


def with_queries_per_image(dataset, n_samples: int, queries: int, seed: int = 0) -> list:
    """``n_samples`` samples of ``dataset`` (a seeded draw) with exactly ``queries`` queries each (a
    sample's own queries, repeated in turn when it has fewer), each seeded so that every way of
    running a step builds the same conversations."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(dataset))
    out = []
    for i in order:
        s = dataset[int(i)]
        if not s.queries:
            continue
        qs = [s.queries[k % len(s.queries)] for k in range(queries)]
        out.append(dataclasses.replace(s, queries=qs, meta={**s.meta, "seed": len(out)}))
        if len(out) == n_samples:
            return out
    raise SystemExit(f"prefix: the training set has {len(out)} samples with queries, fewer than {n_samples}")


def prefix_loss_backward(seg, samples: list, way: str) -> None:
    """Forward and backward of one training batch, run ``way``; fails if the prefix was (not) shared."""
    with prefix_way(seg, way):
        losses = seg(samples, mode="loss")
        shared = seg.lmm.last_shared_prefix
        sum(v for k, v in losses.items() if "loss" in k).backward()
    if (shared is not None) != PREFIX_WAYS[way][0]:
        raise SystemExit(f"prefix: the {way} step {'shared' if shared else 'did not share'} the image prefix; "
                         "does every conversation of an image put its image tokens at the same place?")


def flops_outside_llm(seg, samples: list, way: str) -> int:
    """FLOPs of a training step spent outside the LLM: the image encoders (SAM's, the vision tower and
    projector, per conversation for ``per_conversation``) and the head with its losses, forward and
    backward. The LLM runs between them without a graph and is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with prefix_way(seg, way) as kept:
        with FlopCounterMode(display=False) as encoders:
            batch = seg.prepare(samples, "train")
            if kept is not None:
                with torch.no_grad():
                    kept.tower(kept.pixels[batch.conv_image])
        with torch.no_grad():
            seg.run_lmm(batch)
        with FlopCounterMode(display=False) as head:
            losses = seg.head.loss_by_feat(seg.head(batch), seg.head.get_targets(batch), batch)
            graph = [v for k, v in losses.items() if "loss" in k and v.requires_grad]
            if graph:
                sum(graph).backward()
    seg.zero_grad(set_to_none=True)
    return encoders.get_total_flops() + head.get_total_flops()


class TensorPeak:
    """The peak bytes of tensor storage allocated inside the block and alive at once (forward,
    backward and the checkpointed recomputation; tensors that existed before, such as the weights,
    are not counted): on CPU what ``torch.cuda.max_memory_allocated`` measures on a GPU, without the
    allocator's caching and fragmentation that a process's RSS adds.

    Every op's output storages are seen through a dispatch mode and counted until they are freed
    (a weak reference to the storage: PyTorch keeps one Python object per live storage).
    """

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.live: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self.live.discard(key)
        self.now -= nbytes

    def _seen(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self.live:
            return
        self.live.add(key)
        self.now += st.nbytes()
        self.peak = max(self.peak, self.now)
        weakref.finalize(st, self._freed, key, st.nbytes())

    @contextlib.contextmanager
    def __call__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        seen = self._seen

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        seen(t)
                return out

        with Mode():
            yield self


def prefix_peak_memory(seg, samples: list, way: str) -> int:
    """Peak bytes of the tensors a forward + backward of ``samples`` run ``way`` allocates (:class:`TensorPeak`)."""
    seg.zero_grad(set_to_none=True)
    peak = TensorPeak()
    with peak():
        prefix_loss_backward(seg, samples, way)
    seg.zero_grad(set_to_none=True)
    return peak.peak


def cmd_prefix(args) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    options = dict(LISA_RECIPE)
    options.update(args.raw_cfg_options or {})
    cfg = load_cfg(args.config, options)
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    runner = build(cfg, os.path.join(args.work_dir, "prefix"), 1)
    seg = runner.model
    dataset = runner.build_dataloader(loader_cfg).dataset
    per_step = int(cfg.train_dataloader.batch_size)
    steps = args.warmup + args.iters
    samples = with_queries_per_image(dataset, per_step * (steps + 1), args.queries_per_image)
    batches = [samples[k: k + per_step] for k in range(0, len(samples), per_step)]
    params = [p for p in seg.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step(way: str, batch: list) -> float:
        t0 = time.perf_counter()
        prefix_loss_backward(seg, batch, way)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    seg.train()
    rows: dict[str, dict] = {}
    for way in PREFIX_WAYS:  # FLOPs of forward + backward on the first batch
        with FlopCounterMode(display=False) as counter:
            prefix_loss_backward(seg, batches[0], way)
        seg.zero_grad(set_to_none=True)
        total = counter.get_total_flops()
        llm = total - flops_outside_llm(seg, batches[0], way)
        rows[way] = dict(flops_per_step=total, llm_flops=llm, llm_flop_share=round(llm / total, 4),
                         peak_step_mb=round(prefix_peak_memory(seg, batches[0], way) / 2**20, 1))
    times: dict[str, list[float]] = {way: [] for way in PREFIX_WAYS}
    names = list(PREFIX_WAYS)
    for k, batch in enumerate(batches[1: steps + 1]):
        for way in names[k % 3:] + names[: k % 3]:  # the order rotates from step to step
            dt = step(way, batch)
            if k >= args.warmup:
                times[way].append(dt)
    for way in PREFIX_WAYS:
        rows[way].update(step_s=[round(t, 3) for t in times[way]],
                         median_step_s=round(statistics.median(times[way]), 4))
    base = rows["shared"]
    ratios = {f"{way}_over_shared": dict(time=round(rows[way]["median_step_s"] / base["median_step_s"], 3),
                                         flops=round(rows[way]["flops_per_step"] / base["flops_per_step"], 3),
                                         llm_flops=round(rows[way]["llm_flops"] / base["llm_flops"], 3),
                                         peak_step_memory=round(rows[way]["peak_step_mb"] / base["peak_step_mb"], 3))
              for way in ("per_conversation", "unshared")}
    return dict(benchmark="image_prefix_sharing", config=args.config, recipe=LISA_RECIPE,
                images_per_step=per_step, queries_per_image=args.queries_per_image, iters=args.iters,
                warmup=args.warmup, threads=torch.get_num_threads(), ways=rows, ratios=ratios)


#: Model shapes for ``prefix-flops``. ``7b``: LLaVA-1.5-7B (the LLM in LLaMA-2-7B's shape with LISA's
#: vocabulary, the CLIP ViT-L/14 tower at 336 px: 576 image tokens) and SAM ViT-H at 1024 px, LISA-7B's
#: parts. ``small``: configs/lisa/lisa_small_synthref.py's shapes.
SCALES = {
    "7b": dict(text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32004, max_position_embeddings=4096),
               vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14),
               sam=dict(variant="vit_h", image_size=1024)),
    "small": dict(text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=8,
                            num_key_value_heads=8, vocab_size=1025, max_position_embeddings=1024),
                  vision=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                              image_size=224, patch_size=16),
                  sam=dict(variant="custom", image_size=512, prompt_dim=128,
                           encoder=dict(embed_dim=256, depth=4, num_heads=4))),
}


def meta_llm_step_flops(scale: dict, images: int, queries: int, prefix: int, suffix: int, shared: bool) -> int:
    """FLOPs of the LLM's forward + backward (LM head included) for ``images * queries`` conversations of
    ``prefix + suffix`` tokens under LISA's recipe (LoRA r=8 on q/v, ``lm_head`` and ``embed_tokens``
    trained, non-reentrant checkpointing of every decoder layer), counted on the meta device."""
    from peft import LoraConfig, inject_adapter_in_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaModel

    from reseg.models.lmm import shared_prefix

    with torch.device("meta"):
        lm = LlamaModel(LlamaConfig(**scale["text"]))
        head = torch.nn.Linear(lm.config.hidden_size, lm.config.vocab_size, bias=False)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=r".*\.(q_proj|v_proj)")
    inject_adapter_in_model(lora, lm)
    for name, p in lm.named_parameters():
        p.requires_grad_("lora_" in name or "embed_tokens" in name)
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.train()
    C, L = images * queries, prefix + suffix
    ids = torch.zeros((C, L), dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        embeds = lm.embed_tokens(ids)
        if shared:
            group = torch.arange(C, device="meta") // queries
            reps = torch.arange(images, device="meta") * queries
            hidden = shared_prefix.forward_checkpointed(lm, embeds, torch.ones((C, L), dtype=torch.long, device="meta"),
                                                        prefix, reps, group)
        else:  # a 4D causal mask: transformers' own mask building reads values, which meta tensors have not
            causal = torch.ones((L, L), dtype=torch.bool, device="meta").tril()[None, None].expand(C, 1, L, L)
            hidden = lm(inputs_embeds=embeds, attention_mask=causal, use_cache=False).last_hidden_state
        head(hidden).float().sum().backward()
    return counter.get_total_flops()


def meta_encoder_flops(scale: dict) -> tuple[int, int]:
    """Forward FLOPs for one image of the vision tower with LLaVA's two-layer projector, and of SAM's
    image encoder (both frozen, no backward), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from reseg.models.mask_sources.sam import build_sam

    vision, text = scale["vision"], scale["text"]
    with torch.device("meta"):
        tower = CLIPVisionModel(CLIPVisionConfig(**vision))
        projector = torch.nn.Sequential(torch.nn.Linear(vision["hidden_size"], text["hidden_size"]), torch.nn.GELU(),
                                        torch.nn.Linear(text["hidden_size"], text["hidden_size"]))
        sam = build_sam(**scale["sam"]).image_encoder
    size, sam_size = vision["image_size"], scale["sam"]["image_size"]
    with torch.no_grad():
        with FlopCounterMode(display=False) as t:
            states = tower(torch.zeros((1, 3, size, size), device="meta"), output_hidden_states=True).hidden_states
            projector(states[-2][:, 1:])
        with FlopCounterMode(display=False) as m:
            sam(torch.zeros((1, 3, sam_size, sam_size), device="meta"))
    return t.get_total_flops(), m.get_total_flops()


def cmd_prefix_flops(args) -> dict:
    scale = SCALES[args.scale]
    tower, sam = meta_encoder_flops(scale)
    G, P, S = args.images, args.prefix_tokens, args.suffix_tokens
    rows = {}
    for Q in args.queries_per_image:
        plain = meta_llm_step_flops(scale, G, Q, P, S, shared=False)
        # one conversation per image: the LMM runs the plain forward, there is nothing to share
        shared = meta_llm_step_flops(scale, G, Q, P, S, shared=True) if Q > 1 else plain
        steps = dict(shared=shared + G * (tower + sam), unshared=plain + G * (tower + sam),
                     per_conversation=plain + G * Q * tower + G * sam)
        rows[str(Q)] = dict(llm_flops=dict(shared=shared, unshared=plain), step_flops=steps,
                            step_tflops={k: round(v / 1e12, 3) for k, v in steps.items()},
                            saved_vs_unshared=round(1 - steps["shared"] / steps["unshared"], 4),
                            saved_vs_per_conversation=round(1 - steps["shared"] / steps["per_conversation"], 4),
                            per_conversation_over_shared=round(steps["per_conversation"] / steps["shared"], 3))
        print(f"{Q} queries per image: {json.dumps(rows[str(Q)])}", file=sys.stderr)
    return dict(benchmark="image_prefix_sharing_flops", scale=args.scale, shapes=scale, images_per_step=G,
                prefix_tokens=P, suffix_tokens=S, tower_flops_per_image=tower, sam_encoder_flops_per_image=sam,
                results=rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["overhead", "memory", "mfu", "ras", "generate", "prefix", "prefix-flops",
                                        "_probe"])
    p.add_argument("config", nargs="?", help="the config (every command but prefix-flops)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None, help="steps (queries for ras) not timed; default 3, prefix 1")
    p.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "K=V"),
                   help="memory: a named set of config overrides (repeatable)")
    p.add_argument("--work-dir", default="work_dirs/benchmark")
    p.add_argument("--out", help="append the result as one JSON line to this file")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    p.add_argument("--checkpoint", help="ras: the RAS checkpoint; generate: the model's (None: the config's weights)")
    p.add_argument("--ar-config", help="ras: the autoregressive baseline's config")
    p.add_argument("--ar-checkpoint", help="ras: the autoregressive baseline's checkpoint")
    p.add_argument("--pool-sizes", type=int, nargs="+", default=[16, 32, 64], help="ras: candidates per image")
    p.add_argument("--queries", type=int, default=60,
                   help="ras: validation queries timed per pool size; generate: queries answered per batch size")
    p.add_argument("--device", default=None, help="ras, generate: cpu / cuda (default: CUDA if available)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="generate: samples per call")
    p.add_argument("--max-new-tokens", type=int, default=32, help="generate: the generation budget")
    p.add_argument("--queries-per-image", type=int, nargs="+", default=None,
                   help="prefix: queries (conversations) per image (one number, default 3); prefix-flops: "
                        "several (default 1 3 10)")
    p.add_argument("--scale", choices=sorted(SCALES), default="7b", help="prefix-flops: the model shapes")
    p.add_argument("--images", type=int, default=2, help="prefix-flops: images per step (LISA: 2 per GPU)")
    p.add_argument("--prefix-tokens", type=int, default=610,
                   help="prefix-flops: tokens through the last image token (LISA-7B: ~34 of system prompt and "
                        "'USER:', 576 image tokens)")
    p.add_argument("--suffix-tokens", type=int, default=48,
                   help="prefix-flops: tokens after it (question, answer, padding)")
    args = p.parse_args(argv)
    args.raw_cfg_options = None
    if args.cfg_options:
        args.raw_cfg_options = dict(args.cfg_options.items())
    if args.iters is None:
        args.iters = {"overhead": 20, "prefix": 5}.get(args.command, 4)
    if args.warmup is None:
        args.warmup = {"prefix": 1}.get(args.command, 3)
    if args.config is None and args.command != "prefix-flops":
        p.error(f"{args.command} needs a CONFIG")
    if args.queries_per_image is None:
        args.queries_per_image = [1, 3, 10] if args.command == "prefix-flops" else [3]
    elif args.command == "prefix" and len(args.queries_per_image) != 1:
        p.error(f"prefix measures one number of queries per image, got --queries-per-image {args.queries_per_image}")
    if args.command == "prefix":
        args.queries_per_image = args.queries_per_image[0]
    if min(args.queries_per_image if isinstance(args.queries_per_image, list) else [args.queries_per_image]) < 1:
        p.error("--queries-per-image must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = dict(overhead=cmd_overhead, memory=cmd_memory, mfu=cmd_mfu, ras=cmd_ras, generate=cmd_generate,
               prefix=cmd_prefix, _probe=_probe, **{"prefix-flops": cmd_prefix_flops})[args.command]
    result = run(args)
    if args.command != "_probe":
        result["command"] = "python tools/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    line = json.dumps(result, default=str)
    print(line if args.command == "_probe" else json.dumps(result, indent=2, default=str))
    if args.out and args.command != "_probe":
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
