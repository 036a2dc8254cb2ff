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


def checkpointed_lmm(tmp_path, lora: bool, attention: str = "sdpa"):
    """A tiny LLaVA trained under gradient checkpointing; with LoRA as LISA trains (on q/v, ``lm_head`` and
    ``embed_tokens`` fully), its B matrices drawn at random so the adapters change the states and gradients."""
    torch.manual_seed(0)
    kw = (dict(lora=dict(r=4, lora_alpha=8, lora_dropout=0.0)) if lora
          else dict(lora=None, trainable_modules="all", train_projector=True))
    m = LMMS.build(tiny_lmm_cfg(str(tmp_path / "tok"), gradient_checkpointing=True, **kw))
    m.add_tokens(["[SEG]"])
    m.model.set_attn_implementation(attention)
    with torch.no_grad():
        for name, p in m.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return m.train()


@pytest.mark.parametrize("lora,attention", [(False, "sdpa"), (True, "sdpa"), (False, "eager")])
def test_shared_prefix_under_gradient_checkpointing_matches_plain_forward(tmp_path, lora, attention):
    m = checkpointed_lmm(tmp_path, lora, attention)
    assert m.model.is_activation_checkpointing
    tokens, index = batch(m)
    feats = torch.randn(2, m.num_image_tokens, m.hidden_size)
    plain, g_plain, s_plain = run(m, tokens, index, feats.clone().requires_grad_(), share=False)
    shared, g_shared, s_shared = run(m, tokens, index, feats.clone().requires_grad_(), share=True)
    assert s_plain is None and s_shared is not None and s_shared[1] == 2
    torch.testing.assert_close(shared["hidden"], plain["hidden"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(shared["logits"], plain["logits"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(shared["loss_text"], plain["loss_text"], atol=1e-6, rtol=1e-5)
    assert set(g_shared) == set(g_plain)
    assert any("lora_A" in n for n in g_plain) == lora and len(g_plain) > (5 if lora else 10)
    for name in g_plain:
        assert g_plain[name].abs().sum() > 0, name
        torch.testing.assert_close(g_shared[name], g_plain[name], atol=1e-6, rtol=1e-3, msg=name)


def test_shared_prefix_under_gradient_checkpointing_recomputes_layers_in_backward(tmp_path):
    """Each decoder layer is checkpointed: the backward pass runs it again (over the prefix and over the rest)."""
    m = checkpointed_lmm(tmp_path, lora=True)
    calls = {"forward": 0, "backward": 0}
    phase = ["forward"]
    # a pre-hook: the recomputation stops inside the second call once it has every state the backward needs
    hook = m.model.model.language_model.layers[0].register_forward_pre_hook(
        lambda mod, i: calls.__setitem__(phase[0], calls[phase[0]] + 1))
    try:
        tokens, index = batch(m)
        feats = torch.randn(2, m.num_image_tokens, m.hidden_size, requires_grad=True)
        out = m(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
                image_index=index, labels=tokens["labels"])
        phase[0] = "backward"
        out["loss_text"].backward()
    finally:
        hook.remove()
    assert m.last_shared_prefix is not None
    assert calls == {"forward": 2, "backward": 2}


def test_gradient_checkpointing_runs_no_backward_through_a_frozen_vision_tower(tmp_path):
    m = checkpointed_lmm(tmp_path, lora=True)  # tower and projector frozen, as in LISA's recipe
    pixels = torch.randn(2, 3, 64, 64)
    assert not m.image_features(pixels).requires_grad
    m.train_projector = True
    m._set_trainable()
    assert m.image_features(pixels).requires_grad  # a trained projector still gets its gradient


def test_segmentor_losses_and_gradients_equal_with_prefix_shared_under_lisa_recipe(tmp_path):
    """Tiny LISA with LoRA and gradient checkpointing: text and mask losses and every gradient match."""
    from reseg.registry import MODELS
    from tiny import tiny_model_cfg, toy_sample

    torch.manual_seed(0)
    cfg = tiny_model_cfg(str(tmp_path / "tok"))
    cfg["lmm"].update(lora=dict(r=4, lora_alpha=8, lora_dropout=0.0), gradient_checkpointing=True)
    model = MODELS.build(cfg).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    samples = [toy_sample(n_queries=3, seed=1), toy_sample(40, 30, n_queries=3, seed=2)]
    for k, s in enumerate(samples):
        s.meta["seed"] = k  # the same question and answer templates in both calls
    results = {}
    for share in (False, True):
        model.lmm.share_image_prefix = share
        model.zero_grad(set_to_none=True)
        losses = model(samples, mode="loss")
        sum(losses.values()).backward()
        results[share] = (model.lmm.last_shared_prefix, {k: v.detach() for k, v in losses.items()},
                          {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (s_plain, l_plain, g_plain), (s_shared, l_shared, g_shared) = results[False], results[True]
    assert s_plain is None and s_shared is not None and s_shared[1] == 2
    assert set(l_plain) == {"loss_text", "loss_mask_bce", "loss_mask_dice"}
    for k in l_plain:
        torch.testing.assert_close(l_shared[k], l_plain[k], atol=1e-6, rtol=1e-5, msg=k)
    assert set(g_shared) == set(g_plain) and any("lora_A" in n for n in g_plain)
    assert any("mask_decoder" in n for n in g_plain)
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], atol=1e-6, rtol=1e-3, msg=name)


def test_shared_prefix_under_gradient_checkpointing_refuses_other_llms(tmp_path):
    """The checkpointed loop re-implements LlamaModel's forward: another LLM (here Qwen2) runs the plain forward
    under checkpointing, with a warning naming it, and still shares the prefix without checkpointing."""
    from transformers import Qwen2Config, Qwen2Model

    from reseg.models.lmm import shared_prefix

    m = checkpointed_lmm(tmp_path, lora=False)
    llama = m.model.model.language_model
    qcfg = Qwen2Config(vocab_size=llama.config.vocab_size, hidden_size=llama.config.hidden_size,
                       intermediate_size=llama.config.intermediate_size, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, max_position_embeddings=512, pad_token_id=llama.config.pad_token_id)
    m.model.model.language_model = Qwen2Model(qcfg)
    m.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert "Qwen2Model" in shared_prefix.unsupported(m.model.model.language_model)
    assert shared_prefix.unsupported(llama) is None
    tokens, index = batch(m)
    feats = torch.randn(2, m.num_image_tokens, m.hidden_size)
    kw = dict(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
              image_index=index, labels=tokens["labels"])
    m.share_image_prefix = True
    with pytest.warns(UserWarning, match="Qwen2Model"):
        out = m(**kw)
    assert m.last_shared_prefix is None
    m.share_image_prefix = False
    torch.testing.assert_close(out["hidden"], m(**kw)["hidden"])
    m.eval()  # no checkpointing at inference: the key/value cache path shares the prefix
    m.share_image_prefix = True
    with torch.no_grad():
        m(**kw)
    assert m.last_shared_prefix is not None
