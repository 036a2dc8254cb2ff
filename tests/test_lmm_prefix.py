"""LlavaLMM's shared image prefix: the tokens through the last image token run once per image.

The shared forward must give the plain forward's hidden states, text loss and gradients (up to float
rounding), and fall back to the plain forward whenever sharing would not be exact.
"""
from __future__ import annotations

import pytest
import torch

from reseg.registry import LMMS
from tiny import tiny_lmm_cfg


@pytest.fixture(scope="module")
def lmm(tmp_path_factory):
    torch.manual_seed(0)
    tok = str(tmp_path_factory.mktemp("tok"))
    m = LMMS.build(tiny_lmm_cfg(tok, lora=None, trainable_modules="all", train_projector=True))
    m.add_tokens(["[SEG]"])
    return m


QUESTIONS = [  # image 0 gets three conversations, image 1 two, of different lengths (right padding)
    (0, "what is the red circle?", "It is [SEG]."),
    (0, "segment the big blue star on the left", "Sure, [SEG]."),
    (1, "where?", "[SEG]."),
    (0, "the shape left of the green square, please", "[SEG] it is."),
    (1, "the lowest shape in this picture", "Sure, it is [SEG]."),
]


def batch(lmm, questions=QUESTIONS, prompt="USER: <image>\n{q} ASSISTANT:"):
    tokens = lmm.collate([lmm.encode(prompt.format(q=q), a) for _, q, a in questions])
    index = torch.tensor([i for i, _, _ in questions])
    return tokens, index


def run(lmm, tokens, index, feats, share: bool, **kw):
    lmm.share_image_prefix = share
    lmm.zero_grad(set_to_none=True)
    out = lmm(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
              image_index=index, labels=tokens["labels"], **kw)
    shared = lmm.last_shared_prefix
    # a loss that reads every position's state and the text loss, so every gradient path is exercised
    w = torch.linspace(-1, 1, out["hidden"].shape[-1])
    (out["loss_text"] + (out["hidden"] * w).sum() * 1e-3).backward()
    grads = {n: p.grad.clone() for n, p in lmm.named_parameters() if p.grad is not None}
    grads["image_feats"] = feats.grad.clone()  # what flows on into the projector and the tower
    return out, grads, shared


def test_shared_prefix_matches_plain_forward_and_gradients(lmm):
    lmm.train()
    tokens, index = batch(lmm)
    pixels = torch.randn(2, 3, 64, 64)
    feats = lmm.image_features(pixels)
    plain, g_plain, s_plain = run(lmm, tokens, index, feats.detach().requires_grad_(), share=False)
    shared, g_shared, s_shared = run(lmm, tokens, index, feats.detach().requires_grad_(), share=True)
    n_img = lmm.num_image_tokens
    assert s_plain is None
    # "<s>USER: " then the image tokens; two distinct images
    assert s_shared is not None and s_shared[1] == 2 and s_shared[0] > n_img
    assert plain["hidden"].shape == shared["hidden"].shape
    torch.testing.assert_close(shared["hidden"], plain["hidden"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(shared["logits"], plain["logits"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(shared["loss_text"], plain["loss_text"], atol=1e-6, rtol=1e-5)
    assert set(g_shared) == set(g_plain) and len(g_plain) > 10
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], atol=1e-6, rtol=1e-3, msg=name)
    assert g_plain["image_feats"].abs().sum() > 0


def test_shared_prefix_eval_no_grad(lmm):
    lmm.eval()
    tokens, index = batch(lmm)
    with torch.no_grad():
        feats = lmm.image_features(torch.randn(2, 3, 64, 64))
        outs = []
        for share in (False, True):
            lmm.share_image_prefix = share
            outs.append(lmm(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                            image_feats=feats, image_index=index, with_logits=False)["hidden"])
    assert lmm.last_shared_prefix is not None
    torch.testing.assert_close(outs[1], outs[0], atol=2e-5, rtol=1e-4)
    lmm.train()


def forward_shared_prefix(lmm, tokens, index, feats, **kw):
    lmm.share_image_prefix = True
    with torch.no_grad():
        lmm(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
            image_index=index, **kw)
    return lmm.last_shared_prefix


def test_shared_prefix_falls_back_when_not_exact_or_useless(lmm):
    feats = torch.randn(3, lmm.num_image_tokens, lmm.hidden_size)
    tokens, index = batch(lmm)
    assert forward_shared_prefix(lmm, tokens, index, feats) is not None
    # one conversation per image: nothing to share
    tokens1, _ = batch(lmm, QUESTIONS[:3])
    assert forward_shared_prefix(lmm, tokens1, torch.tensor([0, 1, 2]), feats) is None
    # different text before the image for two conversations of the same image
    prompts = [lmm.encode("USER: <image>\nq ASSISTANT:", "a"), lmm.encode("USER: look <image>\nq ASSISTANT:", "a")]
    tk = lmm.collate(prompts)
    assert forward_shared_prefix(lmm, tk, torch.tensor([0, 0]), feats) is None
    # a head embedding written inside the prefix (e.g. over the first token)
    pos = torch.zeros_like(tokens["input_ids"], dtype=torch.bool)
    pos[:, 0] = True
    vals = torch.zeros(int(pos.sum()), lmm.hidden_size)
    assert forward_shared_prefix(lmm, tokens, index, feats, extra_embeds=(pos, vals)) is None
    # a head embedding after the image tokens is fine (RAS's candidate tokens)
    pos = torch.zeros_like(tokens["input_ids"], dtype=torch.bool)
    last_img = int((tokens["input_ids"][0] == lmm.image_token_id).nonzero().max())
    pos[:, last_img + 2] = True
    vals = torch.zeros(int(pos.sum()), lmm.hidden_size)
    assert forward_shared_prefix(lmm, tokens, index, feats, extra_embeds=(pos, vals)) is not None
    # switched off
    lmm.share_image_prefix = False
    with torch.no_grad():
        lmm(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
            image_index=index)
    assert lmm.last_shared_prefix is None


def test_shared_prefix_off_under_gradient_checkpointing(tmp_path):
    torch.manual_seed(0)
    m = LMMS.build(tiny_lmm_cfg(str(tmp_path / "tok"), lora=None, trainable_modules="all",
                                gradient_checkpointing=True))
    m.train()
    tokens, index = batch(m)
    feats = torch.randn(2, m.num_image_tokens, m.hidden_size)
    out = m(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
            image_index=index, labels=tokens["labels"])
    assert m.last_shared_prefix is None  # transformers drops the cache inside checkpointed layers
    m.share_image_prefix = False
    ref = m(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
            image_index=index, labels=tokens["labels"])
    torch.testing.assert_close(out["hidden"], ref["hidden"])
    m.eval()  # no checkpointing at inference: shared again
    m.share_image_prefix = True
    with torch.no_grad():
        m(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
          image_index=index)
    assert m.last_shared_prefix is not None
