"""Tiny model configs shared by tests: the real classes at the smallest useful sizes, random weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reseg.structures import Query, Sample

ROOT = Path(__file__).resolve().parents[1]


def tiny_lmm_cfg(tokenizer_dir: str, **over) -> dict:
    cfg = dict(
        type="LlavaLMM",
        tiny=dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=64, patch_size=16),
                  text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=2, max_position_embeddings=512),
                  tokenizer_dir=tokenizer_dir),
        lora=dict(r=4, lora_alpha=8),
        trainable_modules=("lm_head", "embed_tokens"),
    )
    cfg.update(over)
    return cfg


def tiny_sam_cfg(**over) -> dict:
    cfg = dict(type="SAMMaskSource", variant="custom", image_size=64, prompt_dim=32,
               encoder=dict(embed_dim=32, depth=1, num_heads=2), decoder_depth=1, decoder_mlp_dim=64,
               decoder_heads=2, iou_head_hidden_dim=32)
    cfg.update(over)
    return cfg


def tiny_model_cfg(tokenizer_dir: str, head: str = "LISAHead", **over) -> dict:
    cfg = dict(type="ReasoningSegmentor", lmm=tiny_lmm_cfg(tokenizer_dir), mask_source=tiny_sam_cfg(),
               head=dict(type=head))
    cfg.update(over)
    return cfg


def toy_sample(h: int = 48, w: int = 64, n_queries: int = 2, seed: int = 0) -> Sample:
    """A random image with rectangular targets (for shape/plumbing tests, not for learning)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    queries = []
    for k in range(n_queries):
        m = np.zeros((1, h, w), bool)
        m[0, 4 + k: h // 2 + k, 6: w // 2] = True
        queries.append(Query(text=f"the red square number {k}", masks=m, is_sentence=bool(k % 2)))
    return Sample(image=img, queries=queries, meta=dict(sample_id=f"toy{seed}"))


def tiny_train_cfg(synth_root, tokenizer_dir: str, work_dir: str, max_iters: int = 20, head: str = "LISAHead",
                   batch_size: int = 4, ckpt_interval: int = 10, lr: float = 1e-3):
    """A complete runner config: tiny model + the session's synthetic benchmark + a short fp32 schedule,
    on reseg's runtime (``configs/_base_/default_runtime.py``: scope, hooks, DDP wrapper)."""
    from mmengine.config import Config

    root = str(synth_root)
    refer = dict(type="RefCOCODataset", data_root=root + "/refer_seg", dataset="synthref", split_by="unc",
                 image_dir=root + "/refer_seg/images/synthref")
    reason = dict(type="ReasonSegDataset", data_root=root + "/reason_seg")
    model = tiny_model_cfg(tokenizer_dir, head=head)
    model["lmm"]["trainable_modules"] = "all"
    model["lmm"]["lora"] = None
    cfg = Config.fromfile(str(ROOT / "configs" / "_base_" / "default_runtime.py"))
    cfg.merge_from_dict(dict(
        work_dir=work_dir,
        model=model,
        train_dataloader=dict(batch_size=batch_size, num_workers=0, sampler=dict(type="InfiniteSampler", shuffle=True),
                              collate_fn=dict(type="reseg_collate"),
                              dataset=dict(type="ConcatDataset", datasets=[dict(refer, split="train"),
                                                                           dict(reason, split="train")])),
        val_dataloader=dict(batch_size=4, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                            collate_fn=dict(type="reseg_collate"),
                            dataset=dict(type="ConcatDataset", datasets=[
                                dict(refer, split="val", test_mode=True), dict(reason, split="val", test_mode=True)])),
        val_evaluator=dict(type="SegIoUMetric", split_by="dataset"),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters),
        val_cfg=dict(type="ValLoop"),
        precision="fp32",
        optim_wrapper=dict(type="OptimWrapper",
                           optimizer=dict(type="AdamW", lr=lr, betas=(0.9, 0.95), weight_decay=0.0),
                           clip_grad=dict(max_norm=1.0)),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=ckpt_interval, max_keep_ckpts=3)),
        log_processor=dict(window_size=1),
        randomness=dict(seed=0),
    ))
    return Config(cfg.to_dict())  # no filename: a run names its dump by timestamp, not "default_runtime.py"


def tiny_tokenizer_cfg() -> dict:
    """The RAS mask tokenizer at the smallest sizes: a DINOv2-architecture timm ViT + the position encoding."""
    return dict(type="MaskTokenizer", encoders=[
        dict(type="TimmEncoder", model_name="vit_small_patch14_dinov2", img_size=56,
             model_kwargs=dict(embed_dim=16, depth=1, num_heads=2)),
        dict(type="PositionEncoding", channels=16, grid=4),
    ])


def ras_model_cfg(tokenizer_dir: str, head: str = "RASHead", **head_kw) -> dict:
    """Tiny RAS: the tiny LLaVA (fully trainable, room for 2 x 64 candidates) + a candidate-pool source."""
    lmm = tiny_lmm_cfg(tokenizer_dir, lora=None, trainable_modules="all")
    lmm["tiny"]["text"]["max_position_embeddings"] = 1024
    lmm["max_length"] = 1024
    return dict(type="ReasoningSegmentor", lmm=lmm,
                mask_source=dict(type="CandidatePoolSource", tokenizer=tiny_tokenizer_cfg(), max_candidates=64),
                head=dict(type=head, **head_kw))


def write_tiny_model(tmp: Path, head: str, fmt: str = "pth", model_cfg: dict | None = None,
                     ) -> tuple[str, str, torch.nn.Module]:
    """A config file and a ``.pth`` (``fmt='pth'``) or ``.safetensors`` checkpoint of a freshly initialised
    tiny model (and the model itself): ``tiny_model_cfg`` with ``head``, or ``model_cfg`` when given."""
    from mmengine.config import Config

    from reseg.engine.checkpoint import save_model_weights
    from reseg.plugins import load_plugins
    from reseg.registry import MODELS

    load_plugins()
    torch.manual_seed(0)
    model_cfg = tiny_model_cfg(str(tmp / "tok"), head=head) if model_cfg is None else model_cfg
    cfg = Config(dict(default_scope="reseg", model=model_cfg))
    cfg_path = str(tmp / f"{head}.py")
    cfg.dump(cfg_path)
    model = MODELS.build(cfg.model).eval()
    if fmt == "pth":  # what tools/train.py writes: mmengine's {'meta', 'state_dict', ...}
        ckpt = str(tmp / f"{head}.pth")
        torch.save({"meta": {"iter": 1}, "state_dict": model.state_dict()}, ckpt)
    else:
        ckpt = save_model_weights(model, str(tmp / f"{head}.safetensors"))
    return cfg_path, ckpt, model
