"""Export a trained segmentor as a Hugging Face LLaVA directory plus the rest of its weights, and reload it.

::

    from reseg.export import export_model, load_exported

    export_model("configs/lisa/lisa_tiny_synthref.py", "work_dirs/lisa_tiny_synthref/iter_400.pth", "exports/lisa")
    seg = load_exported("exports/lisa")            # a reseg.api.Segmenter, as load_model returns
    seg.segment("street.jpg", "the man on the left")

The export directory holds:

* ``llava/``: the LMM as a Hugging Face directory (``LlavaForConditionalGeneration.save_pretrained``:
  safetensors weights and config, plus the tokenizer, with the head's added tokens such as ``[SEG]``,
  and the CLIP image processor). LoRA, when the config trains one, is merged into the base weights, so
  the directory loads with ``LlavaForConditionalGeneration.from_pretrained(dir)`` and has no peft keys.
* ``reseg_extra.safetensors``: every other weight of the segmentor (mask source, head layers, ...)
  under its reseg state-dict name (``mask_source.sam...``, ``head...``).
* ``reseg_export.json``: the config the model was built from (``config``: a JSON dict; ``config_text``:
  mmengine's text of it), the checkpoint, the LoRA that was merged, the head's token ids, the vocabulary
  size and the versions of the packages that wrote it. It is written last: a directory without it is
  not an export.

The directory is written under a temporary name next to ``out_dir`` and renamed into place at the
end, so a failure never leaves a half-written export behind (nor damages the export it replaces).

:func:`load_exported` rebuilds the model from the stored config with ``model.lmm.pretrained`` pointing
at ``llava/`` (``tiny=None``, ``lora=None``: merged), loads ``reseg_extra.safetensors`` strictly and
checks that the head's tokens got the ids and the vocabulary size they had at export (the saved
tokenizer already contains them, so the head adds no second embedding row).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["EXPORT_JSON", "EXTRA_WEIGHTS", "LLAVA_DIR", "export_model", "load_exported", "merge_lora"]

EXPORT_JSON = "reseg_export.json"
EXTRA_WEIGHTS = "reseg_extra.safetensors"
LLAVA_DIR = "llava"
FORMAT = "reseg-export"
FORMAT_VERSION = 1
#: state-dict prefix of the Hugging Face model inside a ReasoningSegmentor (``model.lmm.model``).
LMM_PREFIX = "lmm.model."

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------- helpers
def _versions() -> dict[str, str | None]:
    """The run report's package versions (:func:`reseg.engine.determinism.package_versions`) + Python."""
    import platform as _stdlib_platform

    from reseg.engine.determinism import package_versions

    return dict(package_versions(), python=_stdlib_platform.python_version())


def _jsonable(obj: Any, key: str) -> Any:
    """``obj`` as plain JSON values (tuples become lists); anything else is an error naming ``key``."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict) or hasattr(obj, "items"):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"config key {key}: a non-string key {k!r} cannot be stored in {EXPORT_JSON}")
            out[k] = _jsonable(v, f"{key}.{k}" if key else k)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{key}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"config key {key}: a {type(obj).__name__} value ({obj!r:.80}) cannot be stored in "
                     f"{EXPORT_JSON}; exports need configs made of plain values (strings, numbers, lists, dicts)")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_out_dir(out_dir: PathLike, overwrite: bool = False) -> Path:
    """``out_dir`` as a Path, or an error if it may not be written (a file; non-empty without ``overwrite``)."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"OUT_DIR {str(out)!r} exists and is not a directory")
    if out.is_dir() and not _is_empty_dir(out) and not overwrite:
        raise FileExistsError(f"OUT_DIR {str(out)!r} exists and is not empty; pass --overwrite (overwrite=True) "
                              "to replace it")
    return out


def merge_lora(module: Any) -> list[str]:
    """Merge every peft LoRA layer inside ``module`` into its base layer and put the base layer back.

    The LMM injects LoRA with ``peft.inject_adapter_in_model`` (no ``PeftModel`` wrapper, hence no
    ``merge_and_unload``): each targeted ``nn.Linear`` became a peft layer holding the base layer and
    the adapters. Here each one is merged (``W += scale * B @ A``) and replaced by its base layer, so
    the module has the architecture and state-dict names of the plain model. Returns the names of the
    merged layers (relative to ``module``).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    found = [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    merged = []
    for name, layer in found:
        if not getattr(layer, "merged", False):
            layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
        merged.append(name)
    if hasattr(module, "peft_config"):  # left by inject_adapter_in_model; nothing adapts any more
        with contextlib.suppress(AttributeError):
            del module.peft_config
    return merged


def _peft_configs(hf: Any) -> dict | None:
    """The adapters' effective peft configs (``{adapter: {field: value}}``, JSON-ready), or None."""
    configs = getattr(hf, "peft_config", None)
    if not configs:
        return None
    out = {}
    for name, c in dict(configs).items():
        d = c.to_dict() if hasattr(c, "to_dict") else dict(vars(c))
        out[str(name)] = {str(k): (sorted(map(str, v)) if isinstance(v, (set, frozenset)) else
                                   v if isinstance(v, (type(None), bool, int, float, str, list, dict)) else str(v))
                          for k, v in d.items()}
    return json.loads(json.dumps(out, default=str))


def _check_lmm(model: Any, cfg: Any):
    lmm = getattr(model, "lmm", None)
    hf = getattr(lmm, "model", None)
    lmm_cfg = cfg.model.get("lmm")
    lmm_type = lmm_cfg.get("type") if hasattr(lmm_cfg, "get") else type(lmm).__name__
    from transformers import PreTrainedModel

    if not isinstance(hf, PreTrainedModel) or not hasattr(lmm, "tokenizer") or not hasattr(lmm, "image_processor"):
        raise TypeError(f"model.lmm (type {lmm_type!r}) is not a Hugging Face LMM with `model`, `tokenizer` and "
                        "`image_processor` (as LlavaLMM); only such LMMs can be exported")
    return lmm


def _finalise(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; a previous ``out`` is replaced only once ``tmp`` is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=str(out.parent)))
        os.rmdir(old)
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- export
def _write_llava(lmm: Any, dest: Path) -> None:
    import inspect

    hf = lmm.model
    kwargs = {}
    if "safe_serialization" in inspect.signature(hf.save_pretrained).parameters:
        kwargs["safe_serialization"] = True  # transformers < 5 (later versions always write safetensors)
    use_cache = getattr(hf.config, "use_cache", None)
    hf.config.use_cache = True  # LlavaLMM turns the KV cache off for training; HF users generate
    try:
        hf.save_pretrained(str(dest), **kwargs)
    finally:
        hf.config.use_cache = use_cache
    lmm.tokenizer.save_pretrained(str(dest))
    lmm.image_processor.save_pretrained(str(dest))
    if not list(dest.glob("*.safetensors")):
        raise RuntimeError(f"{str(dest)!r}: save_pretrained wrote no .safetensors weights")


def _write_extra(state_dict: dict, path: Path) -> None:
    from reseg.engine.checkpoint import save_model_weights

    save_model_weights(state_dict, str(path))


def export_model(config: Any, checkpoint: PathLike, out_dir: PathLike, cfg_options: dict | None = None,
                 overwrite: bool = False, device: Any = "cpu") -> Path:
    """Export the model of ``config`` with the weights of ``checkpoint`` into ``out_dir`` (see the module doc).

    Args:
        config: an mmengine config file, ``Config`` or dict (as :func:`reseg.api.load_model` takes).
        checkpoint: ``.pth`` or ``.safetensors`` weights that fit the model exactly.
        out_dir: the export directory; it must not exist or be empty unless ``overwrite``.
        cfg_options: overrides merged into the config (``--cfg-options``); stored with it.
        overwrite: replace a non-empty ``out_dir`` (only once the new export is complete).
        device: where the model is built and LoRA merged.
    Returns:
        ``out_dir`` as a Path.
    """
    from reseg.api import load_model

    out = check_out_dir(out_dir, overwrite)
    if checkpoint is None:
        raise ValueError("checkpoint: an export needs the trained weights (a .pth or .safetensors file)")
    seg = load_model(config, str(checkpoint), device=device, cfg_options=cfg_options)
    model, cfg = seg.model, seg.cfg
    lmm = _check_lmm(model, cfg)

    lora_cfg = cfg.model.lmm.get("lora") if hasattr(cfg.model.lmm, "get") else None
    effective = _peft_configs(lmm.model)  # before merge_lora drops them
    merged = merge_lora(lmm.model)
    from peft.tuners.tuners_utils import BaseTunerLayer

    stray = [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if stray:
        raise NotImplementedError(f"peft layers outside model.lmm cannot be exported (not merged): {stray[:3]}")
    if lora_cfg and not merged:
        raise RuntimeError(f"model.lmm.lora={dict(lora_cfg)!r} is set but no LoRA layer was found to merge")

    state = model.state_dict()
    extra = {k: v for k, v in state.items() if not k.startswith(LMM_PREFIX)}
    lora_left = [k for k in state if "lora_" in k]
    if lora_left:
        raise RuntimeError(f"LoRA weights remain after merging: {lora_left[:3]}")
    tokenizer = lmm.tokenizer
    head_tokens = {str(k): int(v) for k, v in (getattr(model.head, "token_ids", None) or {}).items()}
    emb = lmm.model.get_input_embeddings().weight

    config_json = _jsonable(cfg.to_dict(), "")
    try:
        config_text = cfg.pretty_text
    except Exception:  # pragma: no cover - mmengine/yapf cannot format some configs; the dict is enough
        config_text = None
    source = config if isinstance(config, (str, os.PathLike)) else None
    meta = dict(
        format=FORMAT, format_version=FORMAT_VERSION,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        config_file=None if source is None else os.path.abspath(os.fspath(source)),
        checkpoint=os.path.abspath(os.fspath(checkpoint)),
        cfg_options=_jsonable(dict(cfg_options or {}), "cfg_options"),
        config=config_json, config_text=config_text,
        lora=dict(merged=bool(merged), config=_jsonable(lora_cfg, "model.lmm.lora") if lora_cfg else None,
                  peft_config=effective, modules=merged),
        llava_dir=LLAVA_DIR, extra_weights=EXTRA_WEIGHTS, extra_keys=len(extra),
        head_tokens=head_tokens, vocab_size=len(tokenizer), embedding_rows=int(emb.shape[0]),
        dtype=str(emb.dtype).replace("torch.", ""),
        versions=_versions(),
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=str(out.parent)))
    try:
        _write_llava(lmm, tmp / LLAVA_DIR)
        _write_extra(extra, tmp / EXTRA_WEIGHTS)
        with open(tmp / EXPORT_JSON, "w", encoding="utf-8") as f:  # last: marks the export complete
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        check_out_dir(out, overwrite)  # nobody filled it meanwhile
        _finalise(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------- reload
def read_export_info(out_dir: PathLike) -> dict:
    """The parsed ``reseg_export.json`` of an export directory (errors name the path)."""
    out = Path(out_dir).expanduser()
    info_path = out / EXPORT_JSON
    if not out.is_dir():
        raise FileNotFoundError(f"export directory not found: {str(out)!r}")
    if not info_path.is_file():
        raise FileNotFoundError(f"{str(info_path)!r} not found: {str(out)!r} is not a (complete) reseg export "
                                "(written by tools/export.py)")
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(info_path)!r}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{str(info_path)!r}: not a reseg export description (format != {FORMAT!r})")
    if int(info.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(f"{str(info_path)!r}: format_version {info.get('format_version')} is newer than this "
                         f"reseg reads ({FORMAT_VERSION}); upgrade reseg")
    if not isinstance(info.get("config"), dict) or not isinstance(info["config"].get("model"), dict):
        raise ValueError(f"{str(info_path)!r}: key `config.model` is missing or not a dict")
    return info


def exported_config(out_dir: PathLike, info: dict | None = None):
    """The stored config with the LMM pointed at ``<out_dir>/llava`` (merged: no LoRA, no tiny build)."""
    from mmengine.config import Config

    out = Path(out_dir).expanduser()
    info = read_export_info(out) if info is None else info
    cfg = Config(copy.deepcopy(info["config"]))
    lmm = cfg.model.get("lmm")
    if not hasattr(lmm, "get"):
        raise ValueError(f"{str(out / EXPORT_JSON)!r}: key `config.model.lmm` is not a dict")
    llava = out / info.get("llava_dir", LLAVA_DIR)
    if not llava.is_dir():
        raise FileNotFoundError(f"{str(llava)!r} not found (the exported Hugging Face LLaVA directory)")
    lmm["pretrained"] = str(llava.resolve())
    lmm["tiny"] = None
    lmm["lora"] = None
    ms = cfg.model.get("mask_source")
    if hasattr(ms, "get") and ms.get("checkpoint") is not None:
        ms["checkpoint"] = None  # its weights are in reseg_extra.safetensors
    cfg["load_from"] = None
    return cfg


def load_exported(out_dir: PathLike, device: Any = None, cfg_options: dict | None = None,
                  threshold: float = 0.0, batch_size: int = 4):
    """Load an export written by :func:`export_model` as a :class:`reseg.api.Segmenter`.

    ``cfg_options`` are merged into the stored config after it is pointed at the export (for settings
    such as ``model.val_mode``; weights always come from the export).
    """
    from reseg.api import load_model
    from reseg.engine.checkpoint import read_state_dict

    out = Path(out_dir).expanduser()
    info = read_export_info(out)
    cfg = exported_config(out, info)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    extra_path = out / info.get("extra_weights", EXTRA_WEIGHTS)
    if not extra_path.is_file():
        raise FileNotFoundError(f"{str(extra_path)!r} not found (the export's non-LLaVA weights)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="load_model: no checkpoint given")
        seg = load_model(cfg, None, device=device, threshold=threshold, batch_size=batch_size)
    model = seg.model

    extra = read_state_dict(str(extra_path))
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(LMM_PREFIX)}
    missing = [k for k in own if k not in extra]
    unexpected = [k for k in extra if k not in own]
    resized = [f"{k} {tuple(extra[k].shape)} vs {tuple(own[k].shape)}" for k in own
               if k in extra and tuple(extra[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or resized:
        raise ValueError(f"{str(extra_path)!r} does not fit the model rebuilt from {EXPORT_JSON}: "
                         f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                         f"{len(resized)} of another shape {resized[:3]}")
    model.load_state_dict(extra, strict=False)

    lmm = model.lmm
    tokens = {str(k): int(v) for k, v in (getattr(model.head, "token_ids", None) or {}).items()}
    rows = int(lmm.model.get_input_embeddings().weight.shape[0])
    want = (info.get("head_tokens"), info.get("vocab_size"), info.get("embedding_rows"))
    got = (tokens, len(lmm.tokenizer), rows)
    if want != got:
        raise ValueError(f"{str(out / LLAVA_DIR)!r}: the rebuilt model's head tokens / vocabulary size / embedding "
                         f"rows {got} differ from those at export {want} (was the tokenizer in the export "
                         "replaced?)")
    model.eval()
    seg.cfg = cfg
    return seg
