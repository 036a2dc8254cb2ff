"""What a config must say before reseg runs it: the runner checks, it never rewrites.

Every setting a reseg run depends on is written in the config (``configs/_base_/default_runtime.py``,
``configs/_base_/precision/``), so the config the work dir's dump shows is the config that ran.
:func:`config_problems` lists, one line each, what a config asks for that reseg does not run, or
what it lacks; :func:`check_run_config` raises them all at once, before anything is built. Each
line names the key, the value found and what to write instead.

The rules (docs/getting_started.md, "The config is what runs"):

* ``default_scope='reseg'``;
* a config that trains (one with ``train_cfg``) has ``default_hooks.checkpoint`` of type
  ``SafeCheckpointHook`` (or ``None``: no checkpoints; any mmengine ``CheckpointHook`` that is not a
  ``SafeCheckpointHook`` is refused), and ``custom_hooks`` holding ``PlainCheckpointHook`` and
  ``StepSeedHook`` (subclasses count);
* it says ``precision='fp32'`` or ``'bf16'``, and its optim wrapper does that: ``OptimWrapper`` for
  fp32, ``AmpOptimWrapper`` with ``dtype='bfloat16'`` for bf16, ``DeepSpeedOptimWrapper`` with
  ``strategy.bf16.enabled`` matching ``precision`` under a DeepSpeed strategy; bf16 trains on CUDA only;
* a distributed run (``--launcher pytorch``) without a strategy has ``model_wrapper_cfg`` (DDP's
  ``find_unused_parameters``); on CPU with ``device_ids=None`` and no nccl backend;
* ``train_cfg`` (when training), ``val_cfg`` and ``test_cfg`` give their loop only arguments it takes
  (``train_cfg.max_iter`` is refused with the loop's arguments and ``max_iters`` suggested), checked
  here because mmengine builds the loops only after the model;
* and, on this machine (:func:`dataset_problems`, part of :func:`check_run_config`), every dataset
  the run reads (``train_dataloader`` and ``val_dataloader`` when training with a ``val_cfg``,
  ``test_dataloader`` when testing) has its ``data_root`` folder: a wrong ``data_root`` is found
  before the model is built, not after.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ConfigRefused", "check_run_config", "config_problems", "dataset_problems", "deepspeed_settings"]

PRECISIONS = ("fp32", "bf16")
_UNSET = object()
_RUNTIME = "configs/_base_/default_runtime.py"
_REQUIRED_CUSTOM_HOOKS = {
    "PlainCheckpointHook": "it keeps checkpoints loadable with torch.load(weights_only=True)",
    "StepSeedHook": "it reseeds torch per iteration, so a resumed run equals an uninterrupted one",
}


class ConfigRefused(ValueError):
    """A config reseg does not run as written; the message has one line per problem."""


def _type_name(t: Any) -> str | None:
    """``'mmengine.CheckpointHook'``, ``'CheckpointHook'`` or the class itself -> ``'CheckpointHook'``."""
    if t is None:
        return None
    if isinstance(t, str):
        return t.rsplit(".", 1)[-1]
    return getattr(t, "__name__", str(t))


def _autocasts(wrapper_type: Any) -> bool | None:
    """Whether an optim wrapper type runs the forward under autocast (None: unknown type)."""
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    cls = wrapper_type
    if isinstance(wrapper_type, str):
        from mmengine.registry import OPTIM_WRAPPERS

        cls = OPTIM_WRAPPERS.get(wrapper_type)
    if not isinstance(cls, type) or not issubclass(cls, OptimWrapper):
        return None
    return issubclass(cls, AmpOptimWrapper)


def _is_deepspeed(cfg: Any) -> bool:
    strategy = cfg.get("strategy")
    return isinstance(strategy, dict) and _type_name(strategy.get("type")) == "DeepSpeedStrategy"


def deepspeed_settings(cfg: Any) -> tuple[dict, dict]:
    """What a plain ``optim_wrapper`` becomes under DeepSpeed, which clips, accumulates and casts itself.

    Returns ``(optim_wrapper, strategy_keys)``: ``DeepSpeedOptimWrapper`` with the config's optimizer,
    and ``gradient_clipping`` (from ``clip_grad.max_norm``), ``gradient_accumulation_steps`` (from
    ``accumulative_counts``) and ``train_micro_batch_size_per_gpu`` (from the train batch size), each
    only when the config has it. ``tools/train.py --strategy`` writes these; the runner only names them.
    """
    optim = cfg.get("optim_wrapper") or {}
    keys: dict = {}
    clip = (optim.get("clip_grad") or {}).get("max_norm")
    if clip is not None:
        keys["gradient_clipping"] = float(clip)
    keys["gradient_accumulation_steps"] = int(optim.get("accumulative_counts", 1))
    batch = (cfg.get("train_dataloader") or {}).get("batch_size")
    if batch:
        keys["train_micro_batch_size_per_gpu"] = int(batch)
    return dict(type="DeepSpeedOptimWrapper", optimizer=optim.get("optimizer")), keys


def _scope_problems(cfg: Any) -> list[str]:
    scope = cfg.get("default_scope")
    if scope == "reseg":
        return []
    return [f"default_scope={scope!r}: reseg's types are registered in scope 'reseg' (the runner no longer "
            f"fills it in); set default_scope='reseg' ({_RUNTIME})"]


def _hook_class(t: Any) -> type | None:
    """The hook class a config's ``type`` names (a class, or a name reseg's or mmengine's registry knows)."""
    if isinstance(t, type):
        return t
    if not isinstance(t, str):
        return None
    from reseg.registry import HOOKS

    try:
        cls = HOOKS.get(t)
    except KeyError:  # unknown: mmengine reports it when it builds the hooks
        return None
    return cls if isinstance(cls, type) else None


def _hook_problems(cfg: Any) -> list[str]:
    from mmengine.hooks import CheckpointHook

    from reseg.engine.checkpoint import PlainCheckpointHook, SafeCheckpointHook
    from reseg.engine.determinism import StepSeedHook

    out = []
    default_hooks = cfg.get("default_hooks") or {}
    if "checkpoint" not in default_hooks:
        out.append("default_hooks.checkpoint is missing, so mmengine would add its CheckpointHook (not atomic); "
                   f"set default_hooks.checkpoint=dict(type='SafeCheckpointHook', ...) ({_RUNTIME}), or None to "
                   "save no checkpoint")
    elif default_hooks["checkpoint"] is not None:
        ckpt = default_hooks["checkpoint"]
        given = ckpt.get("type") if isinstance(ckpt, dict) else type(ckpt)
        cls = _hook_class(given)
        if cls is not None and issubclass(cls, CheckpointHook) and not issubclass(cls, SafeCheckpointHook):
            out.append(f"default_hooks.checkpoint.type={_type_name(given)!r} is not atomic (a run killed while "
                       "saving leaves a truncated file, and old checkpoints are pruned before the new one is "
                       "complete); use 'SafeCheckpointHook' (same arguments; the runner no longer swaps it in)")
    present = [_hook_class(h.get("type") if isinstance(h, dict) else type(h)) for h in cfg.get("custom_hooks") or []]
    for required in (PlainCheckpointHook, StepSeedHook):
        if not any(isinstance(c, type) and issubclass(c, required) for c in present):
            name = required.__name__
            out.append(f"custom_hooks lacks {name} ({_REQUIRED_CUSTOM_HOOKS[name]}; the runner no longer adds it); "
                       f"add dict(type={name!r}) ({_RUNTIME} lists it; a config that sets custom_hooks replaces the "
                       "inherited list)")
    return out


def _precision_problems(cfg: Any, cuda: bool, training: bool) -> list[str]:
    pieces = "configs/_base_/precision/fp32.py or bf16.py"
    precision = cfg.get("precision", _UNSET)
    if precision is _UNSET:
        return [f"precision is missing (the runner used to read it as 'auto' and swap the optim wrapper on CUDA); "
                f"write precision='fp32' or 'bf16' with its optim wrapper (inherit {pieces})"]
    if precision == "auto":
        return ["precision='auto' is gone: the runner no longer swaps optim_wrapper.type for AmpOptimWrapper on "
                f"CUDA; write precision='fp32' or 'bf16' with its optim wrapper (inherit {pieces})"]
    if precision not in PRECISIONS:
        return [f"precision={precision!r}: expected 'fp32' or 'bf16' ({pieces})"]
    out = []
    if precision == "bf16" and training and not cuda:
        out.append("precision='bf16' trains on a CUDA device only and none is available; train with "
                   "precision='fp32' on CPU (configs/_base_/precision/fp32.py)")
    optim = cfg.get("optim_wrapper")
    if not isinstance(optim, dict):
        return out
    wrapper = optim.get("type", "OptimWrapper")
    name = _type_name(wrapper)
    if _is_deepspeed(cfg):
        if name != "DeepSpeedOptimWrapper":
            wrapped, keys = deepspeed_settings(cfg)
            spelled = ", ".join(f"strategy.{k}={v!r}" for k, v in keys.items())
            out.append(f"strategy.type='DeepSpeedStrategy' with optim_wrapper.type={name!r} (the runner no longer "
                       f"translates it; DeepSpeed clips, accumulates and casts itself): write optim_wrapper="
                       f"dict(_delete_=True, type='DeepSpeedOptimWrapper', optimizer={wrapped['optimizer']!r}) and "
                       f"{spelled} (tools/train.py --strategy writes them)")
        bf16 = bool(((cfg.get("strategy") or {}).get("bf16") or {}).get("enabled", False))
        if bf16 != (precision == "bf16"):
            out.append(f"precision={precision!r} but strategy.bf16.enabled={bf16} (under DeepSpeed the strategy "
                       f"casts); set strategy.bf16=dict(enabled={precision == 'bf16'}) or precision="
                       f"{'bf16' if bf16 else 'fp32'!r}")
        return out
    autocasts = _autocasts(wrapper)
    if autocasts is None:
        return out  # a wrapper reseg does not know: mmengine builds (or rejects) it
    if precision == "bf16" and not autocasts:
        out.append(f"precision='bf16' but optim_wrapper.type={name!r} computes in fp32 (the runner no longer "
                   "swaps it); use optim_wrapper.type='AmpOptimWrapper' with optim_wrapper.dtype='bfloat16' "
                   "(configs/_base_/precision/bf16.py)")
    elif precision == "bf16" and str(optim.get("dtype")).replace("torch.", "") != "bfloat16":
        out.append(f"precision='bf16' but optim_wrapper.dtype={optim.get('dtype')!r}; "
                   "bf16 needs optim_wrapper.dtype='bfloat16'")
    elif precision == "fp32" and autocasts:
        out.append(f"precision='fp32' but optim_wrapper.type={name!r} autocasts (dtype={optim.get('dtype')!r}); "
                   "set precision='bf16', or optim_wrapper.type='OptimWrapper' without dtype "
                   "(configs/_base_/precision/fp32.py)")
    return out


def _distributed_problems(cfg: Any, launcher: str, cuda: bool) -> list[str]:
    wrapper = cfg.get("model_wrapper_cfg")
    top_level_unused = cfg.get("find_unused_parameters", _UNSET) is not _UNSET
    out = []
    if wrapper is not None and top_level_unused:
        out.append(f"find_unused_parameters={cfg.get('find_unused_parameters')!r} is ignored by mmengine when "
                   "model_wrapper_cfg is set; set model_wrapper_cfg.find_unused_parameters instead")
    if launcher == "none" or cfg.get("strategy") is not None or cfg.get("runner_type") == "FlexibleRunner":
        return out
    example = ("model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False, "
               f"find_unused_parameters=True) ({_RUNTIME})")
    if wrapper is None and not (cuda and top_level_unused):
        out.append(f"launcher={launcher!r} but model_wrapper_cfg is missing (the runner no longer sets DDP's "
                   f"find_unused_parameters; [SEG] heads leave SAM's IoU head without gradient); add {example}")
    elif not cuda and (wrapper is None or "device_ids" not in wrapper or wrapper["device_ids"] is not None):
        found = "missing" if wrapper is None or "device_ids" not in wrapper else repr(wrapper["device_ids"])
        out.append(f"model_wrapper_cfg.device_ids is {found}: DDP of a CPU module needs device_ids=None "
                   f"(mmengine passes [LOCAL_RANK] otherwise; the runner no longer sets it); add {example}")
    backend = ((cfg.get("env_cfg") or {}).get("dist_cfg") or {}).get("backend")
    if not cuda and backend not in (None, "gloo"):
        out.append(f"env_cfg.dist_cfg.backend={backend!r} needs CUDA; use 'gloo' on CPU (or leave it unset)")
    return out


#: What the runner passes to a loop itself (mmengine ``Runner.build_*_loop``), never a config key.
_LOOP_RUNTIME_ARGS = ("self", "runner", "dataloader", "evaluator")


def _loop_class(loop: dict, key: str) -> type | None:
    """The loop class of ``train_cfg``/``val_cfg``/``test_cfg`` as mmengine picks it (``type``, or for a
    training loop without one, ``by_epoch``); None when unknown (mmengine reports that)."""
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop

    typ = loop.get("type")
    if typ is None:
        if key == "train_cfg":
            return EpochBasedTrainLoop if loop.get("by_epoch") else IterBasedTrainLoop
        return ValLoop if key == "val_cfg" else TestLoop
    if isinstance(typ, type):
        return typ
    from mmengine.registry import LOOPS

    try:
        cls = LOOPS.get(typ)
    except KeyError:
        return None
    return cls if isinstance(cls, type) else None


def _loop_problems(cfg: Any, training: bool) -> list[str]:
    import difflib
    import inspect

    out = []
    for key in ("train_cfg", "val_cfg", "test_cfg") if training else ("val_cfg", "test_cfg"):
        loop = cfg.get(key)
        if not isinstance(loop, dict):
            continue
        cls = _loop_class(loop, key)
        if cls is None:
            continue
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        takes = [n for n in params if n not in _LOOP_RUNTIME_ARGS]
        # mmengine itself reads `type` and, for a training loop without one, `by_epoch`
        for name in loop:
            if name in takes or name == "type" or (key == "train_cfg" and name == "by_epoch" and "type" not in loop):
                continue
            close = difflib.get_close_matches(name, takes, n=1)
            hint = f"; did you mean {key}.{close[0]}?" if close else ""
            out.append(f"{key}.{name}: {cls.__name__} takes no argument {name!r}{hint} "
                       f"(it takes {', '.join(takes)})")
    return out


def _data_roots(node: Any, where: str):
    """``(dotted key, value)`` of every string ``data_root`` of a dataset config below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data_root" and isinstance(value, str) and "type" in node:
                yield f"{where}.{key}", value
            else:
                yield from _data_roots(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from _data_roots(item, f"{where}.{i}")


def dataset_problems(cfg: Any, training: bool = True) -> list[str]:
    """The ``data_root`` folders of the datasets a run reads that do not exist on this machine, one
    line each naming the key and the path (unlike :func:`config_problems`, this depends on the machine)."""
    from reseg.paths import missing_hint, resolve_path

    if training:
        loaders = ["train_dataloader"] + (["val_dataloader"] if cfg.get("val_cfg") is not None else [])
    else:
        loaders = ["test_dataloader"]
    out, seen = [], set()
    for loader in loaders:
        for key, value in _data_roots(cfg.get(loader), loader):
            path = resolve_path(value)
            if path in seen or path.is_dir():
                continue
            seen.add(path)
            shown = "" if str(path) == value else f" ({path})"
            out.append(f"{key}={value!r}: no such folder{shown}; point data_root at your data (e.g. --cfg-options "
                       f"data_root=/path/to/data).{missing_hint(value)}")
    return out


def config_problems(cfg: Any, launcher: str = "none", training: bool = True,
                    cuda: bool | None = None) -> list[str]:
    """Every reason reseg refuses ``cfg`` as written, one line each (empty: it runs as written).

    Args:
        cfg: The config (mmengine ``Config`` or a dict).
        launcher: ``'none'`` or the distributed launcher (``'pytorch'``, ...).
        training: The run trains (``tools/train.py``); ``False`` for ``tools/test.py``, where the
            optim wrapper is never built and a bf16 config evaluates on CPU too.
        cuda: Whether CUDA is available (default: ask torch).
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    out = _scope_problems(cfg)
    if cfg.get("train_cfg") is not None:
        out += _hook_problems(cfg)
        out += _precision_problems(cfg, cuda, training)
    out += _distributed_problems(cfg, launcher, cuda)
    out += _loop_problems(cfg, training)
    return out


def check_run_config(cfg: Any, launcher: str = "none", training: bool = True, cuda: bool | None = None) -> None:
    """Raise :class:`ConfigRefused` listing every problem :func:`config_problems` finds, then any
    missing dataset folder (:func:`dataset_problems`)."""
    problems = config_problems(cfg, launcher=launcher, training=training, cuda=cuda)
    problems = problems or dataset_problems(cfg, training=training)
    if problems:
        raise ConfigRefused("\n".join(problems))
