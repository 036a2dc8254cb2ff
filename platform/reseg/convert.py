"""Import an official LISA / READ / AnchorSeg checkpoint into reseg's module names (issue 7).

Where the source names come from
--------------------------------
The official releases are Hugging Face model directories saved by each repository's
``merge_lora_weights_and_save_hf_model.py`` (LoRA already merged into the LLM; every ``vision_tower``
key left out, see :func:`add_vision_tower`). Their state-dict keys follow the module tree of the
official model classes:

* ``dvlab-research/LISA``, ``model/LISA.py``: ``LISAForCausalLM`` holds ``model`` (``LisaModel``) and
  ``lm_head``; ``LisaMetaModel.initialize_lisa_modules`` adds ``model.visual_model`` (SAM ViT-H:
  ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder``) and ``model.text_hidden_fcs`` (a
  ``ModuleList`` holding one ``Sequential(Linear, ReLU, Linear, Dropout)``, hence
  ``model.text_hidden_fcs.0.0.*`` and ``model.text_hidden_fcs.0.2.*``).
* ``dvlab-research/LISA``, ``model/llava/model/language_model/llava_llama.py`` and
  ``model/llava/model/llava_arch.py``: the LLaVA fork's ``LlavaLlamaModel`` is a ``LlamaModel``
  (``model.embed_tokens``, ``model.layers.N.*``, ``model.norm``) plus ``model.mm_projector`` (one
  ``nn.Linear`` in LISA's fork, keys ``mm_projector.weight/bias``: see ``expand_linear_projector``;
  LLaVA-1.5's builder makes ``Sequential(Linear, GELU, Linear)``, keys ``mm_projector.0`` /
  ``mm_projector.2``, mapped directly) and
  ``model.vision_tower``; ``model/llava/model/multimodal_encoder/clip_encoder.py``: the tower wraps a
  ``CLIPVisionModel`` as ``.vision_tower``, hence ``model.vision_tower.vision_tower.vision_model.*``.
* ``rui-qian/READ``, ``model/READ.py``: ``READForCausalLM`` / ``ReadMetaModel`` build exactly the
  same modules as LISA (``visual_model``, ``text_hidden_fcs``); READ's additions (similarity points)
  have no weights.
* ``rui-qian/AnchorSeg``, ``model/AnchorSeg.py``: LISA's modules plus ``model.latent_hidden_fcs``
  (same shape as ``text_hidden_fcs``), a ``decoder_modules_initialized`` flag buffer and ``ppm``
  (the policy-prompted-masking module); ``model/segment_anything/modeling/mask_decoder.py`` adds
  ``mask_decoder.latent_token_positional_embedding`` (K+1 x C, added to the sparse prompt) and
  ``mask_decoder.positional_embedding`` (4 x C, added to the mask tokens).

reseg's names: the segmentor holds ``lmm.model`` (a Hugging Face ``LlavaForConditionalGeneration``:
``model.language_model.*``, ``model.vision_tower.*`` (transformers 4.5x: ``model.vision_tower.vision_model.*``),
``model.multi_modal_projector.linear_1/2``,
``lm_head``), ``mask_source.sam.*`` (same SAM module names) and ``head.*`` (``projection``; AnchorSeg
also ``latent_projection``, ``slot_pos``, ``mask_token_pos``).

:func:`convert_state_dict` is the pure name mapping; :func:`fit_to_target` checks the result against a
built model (names and shapes) and absorbs layout differences that depend on the installed
``transformers`` / LoRA setup (``vision_tower.vision_model.`` vs ``vision_tower.``, ``X.weight`` vs
``X.base_layer.weight``).
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch

METHODS = ("lisa", "read", "anchorseg")

#: Where the official key names were read (repository, file).
KEY_SOURCES = {
    "lisa": [("dvlab-research/LISA", "model/LISA.py"),
             ("dvlab-research/LISA", "model/llava/model/language_model/llava_llama.py"),
             ("dvlab-research/LISA", "model/llava/model/multimodal_encoder/clip_encoder.py")],
    "read": [("rui-qian/READ", "model/READ.py")],
    "anchorseg": [("rui-qian/AnchorSeg", "model/AnchorSeg.py"),
                  ("rui-qian/AnchorSeg", "model/segment_anything/modeling/mask_decoder.py")],
}

_LLAVA = "lmm.model."  # the LlavaForConditionalGeneration inside reseg's LlavaLMM

# (official regex, reseg replacement); the first matching rule wins, so specific rules come first.
_LISA_RULES: list[tuple[str, str]] = [
    (r"^lm_head\.", _LLAVA + "lm_head."),
    (r"^model\.embed_tokens\.", _LLAVA + "model.language_model.embed_tokens."),
    (r"^model\.layers\.", _LLAVA + "model.language_model.layers."),
    (r"^model\.norm\.", _LLAVA + "model.language_model.norm."),
    (r"^model\.mm_projector\.0\.", _LLAVA + "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", _LLAVA + "model.multi_modal_projector.linear_2."),
    # the installed transformers (5.x) names the CLIP tower's weights without its `vision_model.` level;
    # fit_to_target() re-inserts it for a model built with a transformers that keeps it (4.5x)
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", _LLAVA + "model.vision_tower."),
    (r"^model\.text_hidden_fcs\.0\.", "head.projection."),
    (r"^model\.visual_model\.", "mask_source.sam."),
]
_ANCHORSEG_RULES: list[tuple[str, str]] = [
    (r"^model\.latent_hidden_fcs\.0\.", "head.latent_projection."),
    (r"^model\.visual_model\.mask_decoder\.latent_token_positional_embedding$", "head.slot_pos"),
    (r"^model\.visual_model\.mask_decoder\.positional_embedding$", "head.mask_token_pos"),
]
RULES: dict[str, list[tuple[str, str]]] = {
    "lisa": _LISA_RULES,
    "read": _LISA_RULES,
    "anchorseg": _ANCHORSEG_RULES + _LISA_RULES,
}

# Official keys that carry nothing reseg uses: dropped and listed in the report, never an error.
_COMMON_IGNORED = [
    (r"\.rotary_emb\.inv_freq$", "RoPE frequency buffer (recomputed by transformers)"),
    (r"\.embeddings\.position_ids$", "CLIP position-id buffer (recomputed by transformers)"),
]
IGNORED: dict[str, list[tuple[str, str]]] = {
    "lisa": _COMMON_IGNORED,
    "read": _COMMON_IGNORED,
    "anchorseg": _COMMON_IGNORED + [
        (r"^model\.decoder_modules_initialized$", "AnchorSeg's initialisation flag buffer"),
        (r"^ppm\.", "AnchorSeg's PolicyPromptedMasking; reseg reads the last layer (PPM mode 1, no weights)"),
    ],
}


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


def map_key(key: str, method: str) -> Optional[str]:
    """The reseg name of one official key, or None when no rule maps it."""
    for pattern, repl in RULES[method]:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    return None


_PROJ = _LLAVA + "model.multi_modal_projector."


def convert_state_dict(src: dict, method: str, expand_linear_projector: bool = False) -> tuple[dict, ConversionReport]:
    """Rename an official state dict to reseg's names (pure: tensors are shared, not copied).

    ``expand_linear_projector``: the LISA repository's LLaVA fork (``model/llava/model/llava_arch.py``)
    builds ``mm_projector`` as one ``nn.Linear`` (keys ``model.mm_projector.weight/bias``). Hugging
    Face LLaVA always has ``linear_1 -> act -> linear_2``; with this flag the Linear becomes
    ``linear_1`` and ``linear_2`` the identity (zero bias), which is the same function exactly when the
    target's ``projector_hidden_act`` is ``'linear'`` (checked when a config is given).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    report = ConversionReport(method=method)
    dst: dict = {}
    if expand_linear_projector and "model.mm_projector.weight" in src:
        src = dict(src)
        weight = src.pop("model.mm_projector.weight")
        bias = src.pop("model.mm_projector.bias", None)
        hidden = weight.shape[0]
        dst[_PROJ + "linear_1.weight"] = weight
        dst[_PROJ + "linear_1.bias"] = bias if bias is not None else torch.zeros(hidden, dtype=weight.dtype)
        dst[_PROJ + "linear_2.weight"] = torch.eye(hidden, dtype=weight.dtype)
        dst[_PROJ + "linear_2.bias"] = torch.zeros(hidden, dtype=weight.dtype)
        report.notes.append("single-Linear mm_projector expanded to linear_1 = it, linear_2 = identity "
                            "(exact only with projector_hidden_act='linear')")
    for key, value in src.items():
        why = next((w for p, w in IGNORED[method] if re.search(p, key)), None)
        if why is not None:
            report.ignored.append((key, why))
            continue
        new = map_key(key, method)
        if new is None:
            report.unmapped.append(key)
            continue
        if new in dst:
            raise ValueError(f"two source keys map to {new!r} (second: {key!r})")
        dst[new] = value
    report.mapped = len(dst)
    return dst, report


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
    except Exception as e:  # noqa: BLE001 - any unpickling failure
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


def target_from_config(config: str, cfg_options: Optional[dict] = None) -> tuple[dict, Optional[str]]:
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


def convert_checkpoint(src: str, dst: str, method: str, config: Optional[str] = None, strict: bool = True,
                       overwrite: bool = False, cfg_options: Optional[dict] = None,
                       vision_tower: Optional[str] = None, expand_linear_projector: bool = False) -> ConversionReport:
    """Read ``src`` (plus the CLIP checkpoint ``vision_tower``, if given), convert, check against
    ``config``'s model (if given) and write ``dst``."""
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst!r} exists; pass --overwrite to replace it")
    if not (dst.endswith(".safetensors") or dst.endswith(".pth")):
        raise ValueError(f"destination must end in .safetensors or .pth, got {dst!r}")
    source = read_source(src)
    if vision_tower is not None:
        source, _ = add_vision_tower(source, read_source(vision_tower))
    sd, report = convert_state_dict(source, method, expand_linear_projector=expand_linear_projector)
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
