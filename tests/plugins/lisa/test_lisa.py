"""LISA head and the shared model parts: [SEG] reading, tokenisation, SAM once per image, losses."""
from __future__ import annotations

import pytest
import torch

from reseg.models.segmentor import assemble
from reseg.registry import MODELS
from reseg_lisa.head import LISAHead
from tiny import tiny_model_cfg, toy_sample


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return MODELS.build(tiny_model_cfg(str(tmp_path_factory.mktemp("tok") / "tokenizer")))


def test_seg_token_is_one_id_and_image_tokens_are_expanded(model):
    lmm = model.lmm
    seg_id = model.head.seg_id
    assert lmm.tokenizer.convert_ids_to_tokens(seg_id) == "[SEG]"
    ids, labels = lmm.encode("USER: <image>\nWhere? ASSISTANT:", " Sure, [SEG].")
    assert ids.count(lmm.image_token_id) == lmm.num_image_tokens == (64 // 16) ** 2
    assert ids.count(seg_id) == 1
    first_answer = labels.index(next(x for x in labels if x != -100))
    assert all(x == -100 for x in labels[:first_answer])  # prompt and image tokens unsupervised
    assert labels[-1] == lmm.tokenizer.eos_token_id and seg_id in labels  # [SEG] and EOS supervised


def test_sam_encoder_runs_once_per_image_for_many_queries(model):
    calls = []
    h = model.mask_source.sam.image_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        samples = [toy_sample(n_queries=3, seed=1), toy_sample(40, 30, n_queries=2, seed=2)]
        losses = model(samples, mode="loss")
    finally:
        h.remove()
    assert calls == [2]  # one batched call over the 2 images, not one per query (5)
    assert set(losses) == {"loss_text", "loss_mask_bce", "loss_mask_dice"}


def test_one_mask_per_query_at_original_size(model):
    model.eval()
    samples = [toy_sample(48, 64, n_queries=2), toy_sample(33, 21, n_queries=1, seed=3)]
    with torch.no_grad():
        out = model.predict(samples)
    model.train()
    assert [len(o["predictions"]) for o in out] == [2, 1]
    assert tuple(out[0]["predictions"][1].masks.shape) == (1, 48, 64)
    assert tuple(out[1]["predictions"][0].masks.shape) == (1, 33, 21)


def test_generation_without_seg_gives_empty_prediction(model):
    model.eval()
    with torch.no_grad():
        out = model.predict([toy_sample()], generate=True)
    model.train()
    for p in out[0]["predictions"]:
        # an untrained model may or may not emit [SEG]; each emitted [SEG] is one mask, none = empty
        n_seg = p.text.count("[SEG]")
        assert p.masks.shape[0] == n_seg and p.exists == (n_seg > 0)
        assert p.binary_mask().shape == (48, 64)


def test_generation_budget_is_model_max_new_tokens(model, monkeypatch, tmp_path):
    """``model.max_new_tokens`` reaches the head's generation."""
    seen = []
    real = model.lmm.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["max_new_tokens"])
        return real(*args, **kwargs)

    monkeypatch.setattr(model.lmm, "generate", spy)
    monkeypatch.setattr(model, "max_new_tokens", 3)
    model.eval()
    with torch.no_grad():
        out = model.predict([toy_sample()], generate=True)
    model.train()
    assert seen and set(seen) == {3}
    assert all(len(model.lmm.tokenizer(p.text, add_special_tokens=False).input_ids) <= 3 + 2
               for p in out[0]["predictions"])
    with pytest.raises(ValueError, match=r"model.max_new_tokens must be an int >= 1, got 0"):
        MODELS.build(dict(tiny_model_cfg(str(tmp_path / "tokenizer")), max_new_tokens=0))


def test_mask_gradient_reaches_lora_and_projection(model):
    model.zero_grad()
    losses = model([toy_sample()], mode="loss")
    (losses["loss_mask_bce"] + losses["loss_mask_dice"]).backward()
    lora = [p.grad for n, p in model.lmm.model.named_parameters() if "lora_B" in n]
    assert lora and any(g is not None and g.abs().sum() > 0 for g in lora)
    assert model.head.projection[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.mask_source.sam.image_encoder.parameters())  # frozen


@pytest.mark.parametrize("text_grad", ["full", "lm_head"])
def test_text_grad_lm_head_keeps_the_text_loss_out_of_the_llm(tmp_path, text_grad):
    """``model.lmm.text_grad='lm_head'``: the text loss trains the LM head only; the LLM body (and so
    the state read for [SEG]) gets no gradient from it. 'full' (LISA) reaches the body."""
    torch.manual_seed(0)
    cfg = tiny_model_cfg(str(tmp_path / "tokenizer"))
    cfg["lmm"] = dict(cfg["lmm"], lora=None, trainable_modules="all", text_grad=text_grad)
    m = MODELS.build(cfg)
    losses = m([toy_sample()], mode="loss")
    losses["loss_text"].backward()
    lm = m.lmm.model
    assert lm.lm_head.weight.grad.abs().sum() > 0
    body = [p.grad for n, p in lm.named_parameters() if "language_model" in n and "layers" in n]
    reached = any(g is not None and g.abs().sum() > 0 for g in body)
    assert reached == (text_grad == "full")
    assert m.head.projection[0].weight.grad is None  # the text loss never reaches the [SEG] projection
    with pytest.raises(ValueError, match=r"model.lmm.text_grad must be 'full' or 'lm_head', got 'body'"):
        MODELS.build(dict(cfg, lmm=dict(cfg["lmm"], text_grad="body")))


def test_no_text_loss_skips_the_lm_head_with_the_same_mask_losses_and_gradients(tmp_path, monkeypatch):
    """With ``ce_weight=0`` and no ``[REJ]`` nothing reads the LM head's logits, so the segmentor skips
    it: no logits, ``loss_text`` a plain 0, and the mask losses and every gradient equal the run that
    computes the logits (and a zero-weighted CE) anyway."""
    cfg = tiny_model_cfg(str(tmp_path / "tokenizer"), head="LISAHead")
    cfg["head"] = dict(type="LISAHead", ce_weight=0.0)
    cfg["lmm"] = dict(cfg["lmm"], lora=None, trainable_modules="all")
    torch.manual_seed(0)
    m = MODELS.build(cfg)
    ctx = m.prepare([toy_sample()], "train")  # one batch of conversations for both runs
    runs = {}
    for name in ("skip", "logits"):
        if name == "logits":
            monkeypatch.setattr(LISAHead, "needs_logits", True)
        m.zero_grad(set_to_none=True)
        m.run_lmm(ctx)
        assert ("logits" in ctx.lmm_out) == (name == "logits")
        losses = m.head.loss_by_feat(m.head(ctx), m.head.get_targets(ctx), ctx)
        sum(v for k, v in losses.items() if k.startswith("loss")).backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        runs[name] = (losses, grads)
    (skip, g_skip), (full, g_full) = runs["skip"], runs["logits"]
    assert float(skip["loss_text"]) == 0.0 and float(full["loss_text"]) == 0.0
    for k in ("loss_mask_bce", "loss_mask_dice"):
        assert torch.allclose(skip[k], full[k])
    assert not any(n.endswith("lm_head.weight") for n in g_skip)
    for n, g in g_skip.items():
        assert torch.allclose(g, g_full[n], atol=1e-7), n
    assert all(float(g.abs().sum()) == 0 for n, g in g_full.items() if n not in g_skip)  # only zeros skipped
    monkeypatch.undo()  # the real property again
    for head_kw, needs in ((dict(ce_weight=0.0), False), (dict(ce_weight=1.0), True),
                           (dict(ce_weight=0.0, rej_token="[REJ]"), True)):
        assert LISAHead(**head_kw).needs_logits is needs


def test_seg_count_mismatch_is_a_clear_error(model):
    s = toy_sample(n_queries=1)
    s.queries[0].answer = "Sure, [SEG] and [SEG]."  # two mask tokens for one target
    with pytest.raises(ValueError, match=r"its answer holds 2 \[SEG\] tokens but its queries expect 1 masks"):
        model([s], mode="loss")


def test_head_requires_sam_decoder_kind(tmp_path):
    cfg = tiny_model_cfg(str(tmp_path / "tok"), mask_source=None)
    with pytest.raises(TypeError, match="needs a mask source of kind 'sam_decoder'"):
        MODELS.build(cfg)


@pytest.fixture(scope="module")
def rej_model(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_model_cfg(str(tmp_path_factory.mktemp("tok") / "tokenizer"))
    cfg["head"] = dict(type="LISAHead", rej_token="[REJ]")
    return MODELS.build(cfg)


def _no_target(sample, qi=0):
    q = sample.queries[qi]
    q.masks = q.masks[:0]
    q.exists = False
    return sample


def test_rej_answers_no_target_queries_in_training(rej_model):
    s = _no_target(toy_sample(n_queries=2))
    convs = rej_model.head.build_conversations(s, "train")
    assert "[REJ]" in convs[0].answer and "[SEG]" not in convs[0].answer
    assert "[SEG]" in convs[1].answer and "[REJ]" not in convs[1].answer
    assert [s.kind for s in convs[0].slots] == ["reject"] and [s.kind for s in convs[1].slots] == ["mask"]
    assert [s.token for s in convs[0].slots] == ["[REJ]"] and [s.token for s in convs[1].slots] == ["[SEG]"]
    # Teacher forcing asks for a [SEG] slot for every query (GSVA re-evaluation, spec §4.3).
    assert all("[SEG]" in c.answer for c in rej_model.head.build_conversations(s, "val"))


def test_rej_slot_counts_in_the_mask_average_as_gsva_does(rej_model):
    # One [SEG] target and one [REJ]: GSVA adds a zero-logit mask vs an empty target (BCE = ln 2,
    # Dice ~ 1) to the average (spec §4.2), so the mask terms are the mean over 2 masks.
    s = _no_target(toy_sample(n_queries=2))
    import random

    with torch.no_grad():
        random.seed(0)  # same answer templates in both calls
        with_rej = rej_model([s], mode="loss")
        rej_model.head.rej_in_mask_loss = False
        random.seed(0)
        without = rej_model([s], mode="loss")
        rej_model.head.rej_in_mask_loss = True
    import math
    bce_one = without["loss_mask_bce"] / 2.0  # weight 2.0, one mask
    assert torch.isclose(with_rej["loss_mask_bce"], 2.0 * (bce_one + math.log(2)) / 2, atol=1e-5)


def test_teacher_forced_existence_is_the_argmax_at_the_slot(rej_model):
    rej_model.eval()
    s = toy_sample(n_queries=2)
    head = rej_model.head
    with torch.no_grad():
        ctx = rej_model.prepare([s], "val")
        rej_model.run_lmm(ctx)
        # force the LM head's choice where each query's [SEG] was chosen: [REJ] for the first, [SEG] for the second
        slots = ctx.slots.where(kind="mask")
        rows, cols = slots.conv, slots.position - 1
        ctx.lmm_out["logits"][rows[0], cols[0], head.rej_id] = 1e4
        ctx.lmm_out["logits"][rows[1], cols[1], head.seg_id] = 1e4
        preds = assemble(ctx, head.predict_by_feat(head(ctx), ctx))[0]
    rej_model.train()
    assert [p.exists for p in preds] == [False, True]
    assert all(p.masks.shape == (1, 48, 64) for p in preds)  # the mask is still decoded (GSVA)


def test_mean_offdiag_cosine_of_the_seg_diagnostic():
    from reseg.research.analyze_seg_states import mean_offdiag_cosine

    same = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert mean_offdiag_cosine(same) == pytest.approx(1.0)
    ortho = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert mean_offdiag_cosine(ortho) == pytest.approx(0.0)
    mixed = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1/sqrt(2)
    assert mean_offdiag_cosine(mixed) == pytest.approx(2 ** -0.5)


def test_tiny_checkpoint_loads_a_whole_llava_and_a_mismatch_names_the_key(tmp_path):
    from reseg.registry import LMMS
    from tiny import tiny_lmm_cfg

    tok_dir = str(tmp_path / "tokenizer")
    torch.manual_seed(0)
    src = LMMS.build(tiny_lmm_cfg(tok_dir, lora=None))
    torch.save(src.model.state_dict(), tmp_path / "llava_tiny.pth")
    cfg = tiny_lmm_cfg(tok_dir, lora=None)
    cfg["tiny"]["checkpoint"] = str(tmp_path / "llava_tiny.pth")
    torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
    dst = LMMS.build(cfg)
    for (name, a), (_, b) in zip(src.model.state_dict().items(), dst.model.state_dict().items()):
        assert torch.equal(a, b), name
    wider = tiny_lmm_cfg(tok_dir, lora=None)
    wider["tiny"]["text"] = dict(wider["tiny"]["text"], num_hidden_layers=3)
    wider["tiny"]["checkpoint"] = str(tmp_path / "llava_tiny.pth")
    with pytest.raises(ValueError, match=r"model\.lmm\.tiny\.checkpoint"):
        LMMS.build(wider)
    missing = tiny_lmm_cfg(tok_dir, lora=None)
    missing["tiny"]["checkpoint"] = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"nope.pth"):
        LMMS.build(missing)
    narrower = tiny_lmm_cfg(tok_dir, lora=None)
    narrower["tiny"]["text"] = dict(narrower["tiny"]["text"], intermediate_size=96)
    narrower["tiny"]["checkpoint"] = str(tmp_path / "llava_tiny.pth")
    with pytest.raises(ValueError, match="of another shape"):
        LMMS.build(narrower)


def test_template_lists_are_config_options_and_checked():
    head = LISAHead(answers=["It is {seg}."], short_questions=["Segment the {text}."])
    assert head.answers == ("It is {seg}.",) and head.short_questions == ("Segment the {text}.",)
    with pytest.raises(ValueError, match=r"model\.head\.answers .*\{seg\}"):
        LISAHead(answers=["It is the mask."])
    with pytest.raises(ValueError, match=r"model\.head\.long_questions"):
        LISAHead(long_questions=[])


def test_seeded_sample_gives_the_same_conversations_whatever_the_global_rng(model):
    """A sample with meta['seed'] (MixedDataset gives one) draws its templates from that seed alone."""
    import random

    head = model.head

    def convs(seed, global_seed):
        s = toy_sample(n_queries=3)
        s.meta["seed"] = seed
        random.seed(global_seed)
        return [(c.prompt, c.answer) for c in head.build_conversations(s, "train")]

    assert convs(7, 0) == convs(7, 1)
    assert len({tuple(convs(seed, 0)) for seed in range(20)}) > 1  # the seed does choose
    unseeded = toy_sample(n_queries=3)  # without a seed: Python's global random, as before
    random.seed(3)
    a = [(c.prompt, c.answer) for c in head.build_conversations(unseeded, "train")]
    random.seed(3)
    assert a == [(c.prompt, c.answer) for c in head.build_conversations(unseeded, "train")]


def test_custom_sam_patch_size_sets_the_embedding_grid():
    """A custom (tiny) SAM encoder may use a finer patch than SAM's 16: the image embedding, the
    prompt encoder's grid and the dense-prompt frame follow it; an image size that is not a multiple
    of the patch is refused, naming both."""
    from reseg.registry import MASK_SOURCES

    cfg = dict(type="SAMMaskSource", variant="custom", image_size=64, prompt_dim=16,
               encoder=dict(embed_dim=16, depth=1, num_heads=2, patch_size=8), decoder_mlp_dim=32,
               decoder_heads=2, iou_head_hidden_dim=16)
    sam = MASK_SOURCES.build(cfg)
    assert sam.embedding_size == (8, 8)
    assert sam.mask_input_size == (32, 32)
    emb = sam.embed(torch.zeros(1, 3, 64, 64))
    assert tuple(emb.shape) == (1, 16, 8, 8)
    low, _ = sam.decode(emb, torch.zeros(2, 1, 16))
    assert tuple(low.shape) == (2, 1, 32, 32)
    default = MASK_SOURCES.build(dict(cfg, encoder=dict(embed_dim=16, depth=1, num_heads=2)))
    assert default.embedding_size == (4, 4)  # SAM's own patch 16
    with pytest.raises(ValueError, match="image_size 60 must be a multiple of the encoder's patch_size 8"):
        MASK_SOURCES.build(dict(cfg, image_size=60))


def test_sam_checkpoint_parts_load_only_the_named_submodules(tmp_path):
    """``checkpoint_parts=["image_encoder"]`` takes the encoder from the file and leaves the decoder
    at its fresh initialisation; an unknown part name is refused, naming the key and the choices."""
    from reseg.registry import MASK_SOURCES
    from tiny import tiny_sam_cfg

    torch.manual_seed(0)
    donor = MASK_SOURCES.build(tiny_sam_cfg())
    path = tmp_path / "sam.pth"
    torch.save(donor.sam.state_dict(), path)
    torch.manual_seed(1)
    fresh = MASK_SOURCES.build(tiny_sam_cfg())
    torch.manual_seed(1)
    enc_only = MASK_SOURCES.build(tiny_sam_cfg(checkpoint=str(path), checkpoint_parts=["image_encoder"]))
    whole = MASK_SOURCES.build(tiny_sam_cfg(checkpoint=str(path)))
    for name, p in enc_only.sam.named_parameters():
        src = donor if name.startswith("image_encoder.") else fresh
        assert torch.equal(p, dict(src.sam.named_parameters())[name]), name
        assert torch.equal(dict(whole.sam.named_parameters())[name], dict(donor.sam.named_parameters())[name])
    assert not torch.equal(donor.sam.mask_decoder.output_upscaling[0].weight,
                           fresh.sam.mask_decoder.output_upscaling[0].weight)
    with pytest.raises(ValueError, match=r"model.mask_source.checkpoint_parts=\['decoder'\].*'mask_decoder'"):
        MASK_SOURCES.build(tiny_sam_cfg(checkpoint=str(path), checkpoint_parts=["decoder"]))
