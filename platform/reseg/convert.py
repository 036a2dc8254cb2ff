"""Import official checkpoints into reseg's module names: the converter registry and its building blocks.

A *checkpoint converter* (:class:`CheckpointConverter`) maps one official repository's state-dict
names to reseg's. Each method plugin registers its own through the ``register_checkpoint_converters``
hook (:mod:`reseg.hookspecs`) into :data:`~reseg.registry.CHECKPOINT_CONVERTERS`;
``tools/convert_checkpoint.py --from NAME`` looks NAME up there (:func:`get_converter`). This module
knows no method by name: it holds the lookup, the conversion driver (:func:`convert_state_dict`,
:func:`convert_checkpoint`) and the building blocks a family of methods shares.

The ``[SEG]`` family's shared layout
------------------------------------
LISA, READ and AnchorSeg releases are Hugging Face model directories saved by each repository's
``merge_lora_weights_and_save_hf_model.py`` (LoRA merged into the LLM; every ``vision_tower`` key
left out, see :func:`add_vision_tower`). They share the module tree of ``dvlab-research/LISA``
(:data:`SEG_FAMILY_KEY_SOURCES`):

* ``model/LISA.py``: ``LISAForCausalLM`` holds ``model`` and ``lm_head``; ``initialize_lisa_modules``
  adds ``model.visual_model`` (SAM ViT-H: ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder``,
  :data:`SAM_RULES`) and ``model.text_hidden_fcs`` (a ``ModuleList`` holding one
  ``Sequential(Linear, ReLU, Linear, Dropout)``, hence ``model.text_hidden_fcs.0.0.*`` and
  ``.0.2.*``: :data:`SEG_PROJECTION_RULES`);
* ``model/llava/model/language_model/llava_llama.py`` and ``model/llava/model/llava_arch.py``: the
  LLaVA fork's ``LlavaLlamaModel`` is a ``LlamaModel`` (``model.embed_tokens``, ``model.layers.N.*``,
  ``model.norm``) plus ``model.mm_projector`` (one ``nn.Linear`` in LISA's fork, keys
  ``mm_projector.weight/bias``: see :func:`expand_linear_projector`; LLaVA-1.5's builder makes
  ``Sequential(Linear, GELU, Linear)``, keys ``mm_projector.0`` / ``.2``) and ``model.vision_tower``;
  ``model/llava/model/multimodal_encoder/clip_encoder.py``: the tower wraps a ``CLIPVisionModel``
  as ``.vision_tower``, hence ``model.vision_tower.vision_tower.vision_model.*``
  (:data:`LLAVA_FORK_RULES`).

reseg's names: the segmentor holds ``lmm.model`` (a Hugging Face ``LlavaForConditionalGeneration``:
``model.language_model.*``, ``model.vision_tower.*`` (transformers 4.5x:
``model.vision_tower.vision_model.*``), ``model.multi_modal_projector.linear_1/2``, ``lm_head``),
``mask_source.sam.*`` (same SAM module names) and ``head.*`` (``projection``, and what a head adds).

:func:`convert_state_dict` applies a converter's rules (pure name mapping); :func:`fit_to_target`
checks the result against a built model (names and shapes) and absorbs layout differences that
depend on the installed ``transformers`` / LoRA setup (``vision_tower.vision_model.`` vs
``vision_tower.``, ``X.weight`` vs ``X.base_layer.weight``).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

#: A rule table: (official regex, reseg replacement); the first matching rule wins, so specific rules come first.
Rules = tuple[tuple[str, str], ...]
#: Official keys that carry nothing reseg uses: (official regex, why); dropped and reported, never an error.
Ignored = tuple[tuple[str, str], ...]

_LLAVA = "lmm.model."  # the LlavaForConditionalGeneration inside reseg's LlavaLMM

#: The LLaVA fork of ``dvlab-research/LISA`` (language model, LLaVA-1.5 two-layer projector, CLIP tower).
LLAVA_FORK_RULES: Rules = (
    (r"^lm_head\.", _LLAVA + "lm_head."),
    (r"^model\.embed_tokens\.", _LLAVA + "model.language_model.embed_tokens."),
    (r"^model\.layers\.", _LLAVA + "model.language_model.layers."),
    (r"^model\.norm\.", _LLAVA + "model.language_model.norm."),
    (r"^model\.mm_projector\.0\.", _LLAVA + "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", _LLAVA + "model.multi_modal_projector.linear_2."),
    # the installed transformers (5.x) names the CLIP tower's weights without its `vision_model.` level;
    # fit_to_target() re-inserts it for a model built with a transformers that keeps it (4.5x)
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", _LLAVA + "model.vision_tower."),
)
#: The ``[SEG]`` state's projection MLP (``text_hidden_fcs``) -> the head's ``projection``.
SEG_PROJECTION_RULES: Rules = ((r"^model\.text_hidden_fcs\.0\.", "head.projection."),)
#: SAM under ``model.visual_model`` -> the mask source's ``sam`` (same module names). Put rules for
#: parameters a method adds inside SAM before this one.
SAM_RULES: Rules = ((r"^model\.visual_model\.", "mask_source.sam."),)
#: The whole shared layout, in matching order.
SEG_FAMILY_RULES: Rules = LLAVA_FORK_RULES + SEG_PROJECTION_RULES + SAM_RULES
#: Buffers the releases carry and transformers recomputes.
BUFFERS_IGNORED: Ignored = (
    (r"\.rotary_emb\.inv_freq$", "RoPE frequency buffer (recomputed by transformers)"),
    (r"\.embeddings\.position_ids$", "CLIP position-id buffer (recomputed by transformers)"),
)
#: Where the shared layout's names were read (repository, file).
SEG_FAMILY_KEY_SOURCES: tuple[tuple[str, str], ...] = (
    ("dvlab-research/LISA", "model/LISA.py"),
    ("dvlab-research/LISA", "model/llava/model/language_model/llava_llama.py"),
    ("dvlab-research/LISA", "model/llava/model/llava_arch.py"),
    ("dvlab-research/LISA", "model/llava/model/multimodal_encoder/clip_encoder.py"),
    ("dvlab-research/LISA", "merge_lora_weights_and_save_hf_model.py"),
)


class CheckpointConverter:
    """How one official repository's checkpoints become reseg's: subclass it, set the class attributes
    and register the class with the ``register_checkpoint_converters`` hook::

        class MyConverter(CheckpointConverter):
            # my method's releases: github.com/me/mymethod, model/mine.py
            key_sources = SEG_FAMILY_KEY_SOURCES + (("me/mymethod", "model/mine.py"),)
            rules = ((r"^model\\.my_fcs\\.0\\.", "head.my_projection."),) + SEG_FAMILY_RULES
            ignored = BUFFERS_IGNORED

    Override :meth:`convert` for anything beyond renaming.
    """

    #: (official regex, reseg replacement); the first matching rule wins, so specific rules come first.
    rules: ClassVar[Rules] = ()
    #: (official regex, why): keys dropped and listed in the report, never an error.
    ignored: ClassVar[Ignored] = ()
    #: (repository, file): where the official names were read.
    key_sources: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, name: str | None = None) -> None:
        #: The name it is registered (and reported) under.
        self.name = name or type(self).__name__

    def map_key(self, key: str) -> str | None:
        """The reseg name of one official key, or None when no rule maps it."""
        for pattern, repl in self.rules:
            if re.search(pattern, key):
                return re.sub(pattern, repl, key, count=1)
        return None

    def ignore_reason(self, key: str) -> str | None:
        """Why an official key is dropped, or None when it is not."""
        return next((why for pattern, why in self.ignored if re.search(pattern, key)), None)

    def convert(self, src: dict, expand_projector: bool = False) -> tuple[dict, ConversionReport]:
        """Rename an official state dict (pure: tensors are shared, not copied); see :func:`convert_state_dict`."""
        report = ConversionReport(method=self.name)
        dst: dict = {}
        if expand_projector:
            src, dst = expand_linear_projector(src, report)
        for key, value in src.items():
            why = self.ignore_reason(key)
            if why is not None:
                report.ignored.append((key, why))
                continue
            new = self.map_key(key)
            if new is None:
                report.unmapped.append(key)
                continue
            if new in dst:
                raise ValueError(f"two source keys map to {new!r} (second: {key!r})")
            dst[new] = value
        report.mapped = len(dst)
        return dst, report


class UnknownConverterError(ValueError):
    """``--from NAME`` names no registered checkpoint converter."""


def registered_converters() -> dict[str, str]:
    """Registered converter name -> who registered it (``plugin lisa``, or the module), sorted by name."""
    from reseg.plugins import load_plugins, registered_by
    from reseg.registry import CHECKPOINT_CONVERTERS

    load_plugins()
    out = {}
    for name in sorted(CHECKPOINT_CONVERTERS.module_dict):
        plugin = registered_by("checkpoint_converters", name)
        out[name] = f"plugin {plugin}" if plugin else CHECKPOINT_CONVERTERS.module_dict[name].__module__
    return out


def get_converter(name: str | CheckpointConverter) -> CheckpointConverter:
    """The converter registered as ``name`` (a converter is returned as it is).

    Raises:
        UnknownConverterError: No converter has that name; the message lists the registered ones, the
            closest name and the plugins not loaded (failed, or filtered by ``RESEG_PLUGINS``).
    """
    import difflib

    from reseg.plugins import failed_plugins, skipped_plugins
    from reseg.registry import CHECKPOINT_CONVERTERS

    if isinstance(name, CheckpointConverter):
        return name
    known = registered_converters()
    if name in known:
        return CHECKPOINT_CONVERTERS.module_dict[name](name)
    listed = ", ".join(f"{n} ({who})" for n, who in known.items()) or "none"
    msg = f"no checkpoint converter named {name!r}; registered: {listed}"
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    absent = [f"{p.name} ({p.reason})" for p in skipped_plugins()]
    absent += [f"{p.name} (failed: {p.error})" for p in failed_plugins()]
    if absent:
        msg += f"; plugins not loaded: {', '.join(absent)}"
    raise UnknownConverterError(msg)


@dataclass
class ConversionReport:
    """What a conversion did. ``ok`` is False when a strict conversion must refuse."""

    method: str
    mapped: int = 0
    unmapped: list[str] = field(default_factory=list)   # source keys no rule maps
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (source key, why)
    unexpected: list[str] = field(default_factory=list)  # converted keys the target model lacks
    missing: list[str] = field(default_factory=list)     # target keys nothing provides
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, source, target shape)
    aliased: list[tuple[str, str]] = field(default_factory=list)  # (converted key, target key)
    notes: list[str] = field(default_factory=list)      # conversions beyond renaming
    problems: list[str] = field(default_factory=list)   # other reasons the result does not fit
    checked: bool = False  # True once compared with a target model

    @property
    def ok(self) -> bool:
        return not (self.unmapped or self.unexpected or self.missing or self.mismatched or self.problems)

    def errors(self, limit: int = 10) -> list[str]:
        out = list(self.problems)
        for what, keys in (("unmapped source key", self.unmapped),
                           ("converted key absent from the target model", self.unexpected),
                           ("target key missing", self.missing)):
            if keys:
                out.append(f"{len(keys)} {what}(s): {keys[:limit]}" + (" ..." if len(keys) > limit else ""))
        if self.mismatched:
            shown = [f"{k}: checkpoint {tuple(s)} vs model {tuple(t)}" for k, s, t in self.mismatched[:limit]]
            more = " ..." if len(self.mismatched) > limit else ""
            out.append(f"{len(self.mismatched)} shape mismatch(es): {shown}{more}")
        if any(re.match(r"^model\.mm_projector\.(weight|bias)$", k) for k in self.unmapped):
            out.append("hint: a single-Linear mm_projector (the LISA repository's LLaVA fork builds "
                       "nn.Linear; LLaVA-1.5's builder makes Linear-GELU-Linear) has no place in Hugging Face "
                       "LLaVA's two-layer projector; pass --expand-linear-projector and build the target with "
                       "projector_hidden_act='linear'")
        if any(".vision_tower." in k for k in self.missing):
            out.append("hint: the official merge script (merge_lora_weights_and_save_hf_model.py) drops the "
                       "CLIP tower; pass --vision-tower with the CLIP checkpoint the release was trained with "
                       "(e.g. a local openai/clip-vit-large-patch14 directory)")
        if any(".lora_A." in k or ".lora_B." in k for k in self.missing):
            out.append("hint: the official release has its LoRA merged into the LLM; build the target "
                       "with model.lmm.lora=None (--cfg-options model.lmm.lora=None)")
        return out

    def format(self, limit: int = 10) -> str:
        lines = [f"method: {self.method}; mapped {self.mapped} tensors"
                 + ("" if self.checked else " (not checked against a model: no --config)")]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} official key(s) reseg does not use:")
            lines += [f"  {k}  ({why})" for k, why in self.ignored[:limit]]
            if len(self.ignored) > limit:
                lines.append(f"  ... and {len(self.ignored) - limit} more")
        if self.aliased:
            lines.append(f"renamed {len(self.aliased)} key(s) to this model's layout "
                         f"(e.g. {self.aliased[0][0]} -> {self.aliased[0][1]})")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"problem: {p}" for p in self.problems]
        for what, keys in (("unmapped source keys", self.unmapped),
                           ("converted keys absent from the target model", self.unexpected),
                           ("target keys missing", self.missing)):
            if keys:
                lines.append(f"{what} ({len(keys)}):")
                lines += [f"  {k}" for k in keys[:limit]]
                if len(keys) > limit:
                    lines.append(f"  ... and {len(keys) - limit} more")
        if self.mismatched:
            lines.append(f"shape mismatches ({len(self.mismatched)}):")
            lines += [f"  {k}: checkpoint {tuple(s)} vs model {tuple(t)}" for k, s, t in self.mismatched[:limit]]
        lines.append("result: " + ("complete" if self.ok else "INCOMPLETE"))
        return "\n".join(lines)


def map_key(key: str, method: str | CheckpointConverter) -> str | None:
    """The reseg name of one official key under the converter registered as ``method`` (None: unmapped)."""
    return get_converter(method).map_key(key)


def __getattr__(name: str):
    """v1's module-level tables, now derived from the registered converters (each plugin owns its rules):
    ``METHODS`` (registered names), ``RULES`` / ``IGNORED`` / ``KEY_SOURCES`` (name -> that converter's)."""
    views = {"METHODS": None, "RULES": "rules", "IGNORED": "ignored", "KEY_SOURCES": "key_sources"}
    if name not in views:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    names = tuple(registered_converters())
    if views[name] is None:
        return names
    return {n: list(getattr(get_converter(n), views[name])) for n in names}


def expand_linear_projector(src: dict, report: ConversionReport) -> tuple[dict, dict]:
    """Split a single-Linear ``mm_projector`` off ``src`` into Hugging Face LLaVA's two layers.

    The LISA repository's LLaVA fork (``model/llava/model/llava_arch.py``) builds ``mm_projector``
    as one ``nn.Linear`` (keys ``model.mm_projector.weight/bias``). Hugging Face LLaVA always has
    ``linear_1 -> act -> linear_2``: the Linear becomes ``linear_1`` and ``linear_2`` the identity
    (zero bias), the same function exactly when the target's ``projector_hidden_act`` is
    ``'linear'`` (checked by :func:`convert_checkpoint` when a config is given).

    Returns ``(rest of src, the four projector tensors under reseg's names)``; ``src`` without that
    Linear is returned unchanged with no tensors.
    """
    if "model.mm_projector.weight" not in src:
        return src, {}
    rest = dict(src)
    weight = rest.pop("model.mm_projector.weight")
    bias = rest.pop("model.mm_projector.bias", None)
    hidden = weight.shape[0]
    proj = _LLAVA + "model.multi_modal_projector."
    out = {
        proj + "linear_1.weight": weight,
        proj + "linear_1.bias": bias if bias is not None else torch.zeros(hidden, dtype=weight.dtype),
        proj + "linear_2.weight": torch.eye(hidden, dtype=weight.dtype),
        proj + "linear_2.bias": torch.zeros(hidden, dtype=weight.dtype),
    }
    report.notes.append("single-Linear mm_projector expanded to linear_1 = it, linear_2 = identity "
                        "(exact only with projector_hidden_act='linear')")
    return rest, out


def convert_state_dict(src: dict, method: str | CheckpointConverter,
                       expand_linear_projector: bool = False) -> tuple[dict, ConversionReport]:
    """Rename an official state dict to reseg's names with the converter registered as ``method``
    (pure: tensors are shared, not copied). ``expand_linear_projector``: see
    :func:`~reseg.convert.expand_linear_projector`."""
    return get_converter(method).convert(src, expand_projector=expand_linear_projector)


def _aliases(key: str) -> Iterable[str]:
    """Names the same tensor has under other transformers / LoRA layouts."""
    forms = [key]
    if ".vision_tower.vision_model." in key:
        forms.append(key.replace(".vision_tower.vision_model.", ".vision_tower.", 1))
    elif ".vision_tower." in key:
        forms.append(key.replace(".vision_tower.", ".vision_tower.vision_model.", 1))
    for k in list(forms):
        m = re.match(r"^(.*)\.(weight|bias)$", k)
        if m:
            forms.append(f"{m.group(1)}.base_layer.{m.group(2)}")
    return forms[1:]


def fit_to_target(dst: dict, target_shapes: dict, report: ConversionReport) -> dict:
    """Match converted names against a model's ``{key: shape}``; fills the report's target fields."""
    out: dict = {}
    for key, value in dst.items():
        name = key
        if name not in target_shapes:
            name = next((a for a in _aliases(key) if a in target_shapes), None)
            if name is None:
                report.unexpected.append(key)
                continue
            report.aliased.append((key, name))
        if name in out:
            raise ValueError(f"two converted keys land on {name!r}")
        if tuple(value.shape) != tuple(target_shapes[name]):
            report.mismatched.append((name, tuple(value.shape), tuple(target_shapes[name])))
        out[name] = value
    report.missing = [k for k in target_shapes if k not in out]
    report.checked = True
    return out


# ----------------------------------------------------------------------------- files
def read_source(path: str) -> dict:
    """An official state dict: ``.bin``/``.pth`` (``weights_only=True``), ``.safetensors``, or a
    directory of Hugging Face shards (``pytorch_model-*.bin`` / ``model-*.safetensors``, with or
    without their index json)."""
    if os.path.isdir(path):
        return _read_shards(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"source checkpoint not found: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"refusing to load {path!r}: not a plain tensor checkpoint "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "module"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} holds no {{name: tensor}} state dict")
    return obj


def _read_shards(folder: str) -> dict:
    files: list[str] = []
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = os.path.join(folder, index_name)
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = [os.path.join(folder, n) for n in sorted(set(weight_map.values()))]
            break
    if not files:
        for pattern in ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin"):
            files = sorted(glob.glob(os.path.join(folder, pattern)))
            if files:
                break
    if not files:
        raise FileNotFoundError(f"{folder!r} holds no Hugging Face weights (model*.safetensors or "
                                "pytorch_model*.bin)")
    out: dict = {}
    for f in files:
        part = read_source(f)
        dup = set(part) & set(out)
        if dup:
            raise ValueError(f"key(s) {sorted(dup)[:3]} appear in two shards ({f!r})")
        out.update(part)
    return out


def write_checkpoint(state_dict: dict, path: str, overwrite: bool = False) -> str:
    """Write ``.safetensors`` (tensors only) or ``.pth`` (``{'state_dict': ...}``, weights_only-loadable)."""
    from reseg.engine.checkpoint import save_model_weights
    from reseg.fileio import atomic_write_bytes

    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass --overwrite to replace it")
    if path.endswith(".safetensors"):
        save_model_weights(state_dict, path)
    elif path.endswith(".pth"):
        import io

        flat = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
        buf = io.BytesIO()
        torch.save({"state_dict": flat}, buf)
        atomic_write_bytes(path, buf.getvalue())
    else:
        raise ValueError(f"destination must end in .safetensors or .pth, got {path!r}")
    return path


def target_from_config(config: str, cfg_options: dict | None = None) -> tuple[dict, str | None]:
    """Build the config's model (on CPU): its ``{key: shape}`` and its LLaVA ``projector_hidden_act``."""
    import copy

    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from reseg.plugins import load_plugins
    from reseg.registry import MODELS, SCOPE

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    load_plugins()
    with DefaultScope.overwrite_default_scope(SCOPE):
        model = MODELS.build(copy.deepcopy(cfg.model))
    llava_cfg = getattr(getattr(getattr(model, "lmm", None), "model", None), "config", None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, getattr(llava_cfg, "projector_hidden_act", None)


def add_vision_tower(src: dict, clip: dict) -> tuple[dict, int]:
    """Add a CLIP checkpoint's vision tower to an official state dict, under the official names.

    The official merge scripts (``dvlab-research/LISA`` ``merge_lora_weights_and_save_hf_model.py``,
    and the copies in the other repositories) save everything *except* ``vision_tower``; the tower is the unchanged
    CLIP model named in the release's config (``vision_tower``, e.g. ``openai/clip-vit-large-patch14``).
    ``clip`` is a ``CLIPModel`` or ``CLIPVisionModel`` state dict (keys ``vision_model.*``; the text
    half, if any, is left out). Returns the merged dict and how many tensors were added.
    """
    tower = {"model.vision_tower.vision_tower." + k: v for k, v in clip.items() if k.startswith("vision_model.")}
    if not tower:
        raise ValueError("the --vision-tower checkpoint has no `vision_model.*` keys (expected a Hugging Face "
                         "CLIPModel or CLIPVisionModel)")
    clash = sorted(set(tower) & set(src))
    if clash:
        raise ValueError(f"the source checkpoint already holds the vision tower ({len(clash)} keys, e.g. "
                         f"{clash[0]!r}); drop --vision-tower")
    merged = dict(src)
    merged.update(tower)
    return merged, len(tower)


class ConversionError(ValueError):
    """A strict conversion found unmapped / missing / unexpected keys or shape mismatches."""


def convert_checkpoint(src: str, dst: str, method: str | CheckpointConverter, config: str | None = None,
                       strict: bool = True, overwrite: bool = False, cfg_options: dict | None = None,
                       vision_tower: str | None = None, expand_linear_projector: bool = False) -> ConversionReport:
    """Read ``src`` (plus the CLIP checkpoint ``vision_tower``, if given), convert it with the converter
    registered as ``method``, check against ``config``'s model (if given) and write ``dst``."""
    converter = get_converter(method)
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst!r} exists; pass --overwrite to replace it")
    if not (dst.endswith(".safetensors") or dst.endswith(".pth")):
        raise ValueError(f"destination must end in .safetensors or .pth, got {dst!r}")
    source = read_source(src)
    if vision_tower is not None:
        source, _ = add_vision_tower(source, read_source(vision_tower))
    sd, report = converter.convert(source, expand_projector=expand_linear_projector)
    if config is not None:
        shapes, act = target_from_config(config, cfg_options)
        sd = fit_to_target(sd, shapes, report)
        if report.notes and act != "linear":
            report.problems.append(f"the single-Linear projector was expanded but the target's projector_hidden_act "
                                   f"is {act!r}, not 'linear': the projector would compute another function")
    if strict and not report.ok:
        raise ConversionError("conversion incomplete (pass --non-strict to write anyway):\n  "
                              + "\n  ".join(report.errors()))
    write_checkpoint(sd, dst, overwrite=overwrite)
    return report


# ----------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments of ``tools/convert_checkpoint.py``."""

    from reseg.cfg_options import KeyValueAction

    p = argparse.ArgumentParser(description="Convert an official checkpoint to reseg's module names")
    p.add_argument("--from", dest="method", required=True, metavar="NAME",
                   help="which official repository: a registered checkpoint converter (lisa, read, anchorseg, "
                        "or a plugin's; `reseg list checkpoint_converters`)")
    p.add_argument("src", help="official checkpoint: .bin/.pth/.safetensors file or HF model directory")
    p.add_argument("dst", help="output reseg checkpoint (.safetensors or .pth)")
    p.add_argument("--config", help="reseg config whose model the result must fit (checked by name and shape)")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None,
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


def main(argv: list[str] | None = None) -> int:
    """``tools/convert_checkpoint.py``: 0 written, 1 refused (the error on stderr), 2 bad arguments."""
    args = parse_args(argv)
    try:
        converter = get_converter(args.method)
    except UnknownConverterError as err:
        print(f"error: --from: {err}", file=sys.stderr)
        return 2
    if args.config is not None and not os.path.isfile(args.config):
        print(f"error: config file {args.config!r} does not exist", file=sys.stderr)
        return 2
    try:
        report = convert_checkpoint(args.src, args.dst, converter, config=args.config,
                                    strict=not args.non_strict, overwrite=args.overwrite,
                                    cfg_options=args.cfg_options, vision_tower=args.vision_tower,
                                    expand_linear_projector=args.expand_linear_projector)
    except (ConversionError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.format())
    print(f"written: {args.dst}")
    return 0
