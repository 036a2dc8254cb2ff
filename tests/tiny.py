"""Tiny model configs shared by tests: the real classes at the smallest useful sizes, random weights."""
from __future__ import annotations

import numpy as np

from reseg.structures import Query, Sample


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
