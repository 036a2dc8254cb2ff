"""AnchorSeg head (spec anchorseg_ras.md §1): query bank, spatial prior, TMCC, the head, configs, training."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reseg.models.losses import dice_loss, sigmoid_bce_loss
from reseg.models.segmentor import assemble
from reseg.registry import HEADS, MODELS
from reseg_anchorseg import functional as AF
from tiny import tiny_model_cfg, tiny_train_cfg, toy_sample

ROOT = Path(__file__).resolve().parents[3]
#: 1-D bilinear weights (align_corners=False) from 2 samples to 4: rows of [a, b] coefficients.
UP_2_TO_4 = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ------------------------------------------------------------------------------ query bank (§1.3)
# Ids of a hand-built pair of conversations, K = 3: 9 = BOS, 8 = image, 20-22 = [LATENT0-2], 30 = [SEG].
#   row 0: BOS img img Sure , L0 L1 L2 SEG . EOS pad pad pad
#   row 1: BOS img img It  L0 L1 L2 SEG and L0 L1 L2 SEG .
IDS = torch.tensor([[9, 8, 8, 10, 11, 20, 21, 22, 30, 12, 2, 0, 0, 0],
                    [9, 8, 8, 13, 20, 21, 22, 30, 14, 20, 21, 22, 30, 12]])
LATENT_IDS = [20, 21, 22]


def test_official_convention_reads_the_token_before_seg_and_the_k_before_it():
    rows, anchor, latents = AF.query_bank_positions(IDS, 30, 3, "previous", LATENT_IDS)
    assert rows.tolist() == [0, 1, 1]
    # the anchor is [LATENT2] (the state that predicts [SEG]) ...
    assert anchor.tolist() == [7, 6, 11] and IDS[rows, anchor].tolist() == [22, 22, 22]
    # ... and the latents the token before [LATENT0] ("," / "It" / "and"), [LATENT0], [LATENT1]
    assert latents.tolist() == [[4, 5, 6], [3, 4, 5], [8, 9, 10]]
    assert IDS[rows[:, None], latents].tolist() == [[11, 20, 21], [13, 20, 21], [14, 20, 21]]
    # the states come from those positions
    hidden = (100 * torch.arange(2)[:, None] + torch.arange(14)[None]).float()[..., None]  # h[r, p] = 100 r + p
    assert hidden[rows, anchor, 0].tolist() == [7, 106, 111]


def test_at_convention_reads_the_seg_and_latent_tokens_themselves():
    rows, anchor, latents = AF.query_bank_positions(IDS, 30, 3, "at", LATENT_IDS)
    assert anchor.tolist() == [8, 7, 12] and IDS[rows, anchor].tolist() == [30, 30, 30]
    assert IDS[rows[:, None], latents].tolist() == [LATENT_IDS] * 3


def test_the_bank_refuses_a_seg_whose_latents_are_not_right_before_it():
    ids = torch.tensor([[9, 8, 10, 20, 21, 5, 22, 30, 2]])  # a token (5) between [LATENT1] and [LATENT2]
    with pytest.raises(ValueError, match=r"tokens before the \[SEG\] at row 0, position 7 are \[21, 5, 22\]"):
        AF.query_bank_positions(ids, 30, 3, "previous", LATENT_IDS)
    with pytest.raises(ValueError, match="has no room for its 3 latent queries"):
        AF.query_bank_positions(torch.tensor([[20, 21, 30]]), 30, 3, "previous")


# ------------------------------------------------------------------------------ the prior (§1.5)
def test_prior_pad_corner_crops_the_valid_clip_region_then_resizes():
    # 2x2 tokens [[0, 1], [2, 3]] -> min-max [[0, 1/3], [2/3, 1]] -> bilinear to the 4x4 CLIP input. A 2x4
    # image resized to the 4-px CLIP frame is 2x4 (no resize back): the code keeps rows [0:2].
    from reseg.models.image_tokens import minmax_normalize

    s_hat = minmax_normalize(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    up = UP_2_TO_4 @ np.array([[0, 1 / 3], [2 / 3, 1]]) @ UP_2_TO_4.T
    corner = AF.prior_full_resolution(s_hat, (2, 2), (2, 4), "pad_corner", 4)
    np.testing.assert_allclose(corner[0].numpy(), up[0:2], atol=1e-6)
    # LLaVA-1.5's centred padding puts the image in rows [1:3] instead
    centred = AF.prior_full_resolution(s_hat, (2, 2), (2, 4), "pad", 4)
    np.testing.assert_allclose(centred[0].numpy(), up[1:3], atol=1e-6)


def test_sam_frame_resizes_the_longest_side_and_zero_pads_bottom_right():
    maps = torch.rand(2, 30, 60, generator=torch.Generator().manual_seed(0))
    p = AF.to_sam_mask_frame(maps, (16, 16))
    assert p.shape == (2, 1, 16, 16)
    assert AF.preprocess_shape(30, 60, 16) == (8, 16)  # int(30 * 16 / 60 + 0.5)
    assert p[:, :, 8:].abs().max() == 0 and p[:, :, :8].min() > 0  # rows 8-15 are padding
    assert 0.0 <= float(p.min()) and float(p.max()) <= 1.0


@pytest.mark.parametrize("aspect", ["pad", "crop", "pad_corner"])
def test_prior_map_shape_and_range(aspect):
    sim = torch.randn(3, 16, generator=torch.Generator().manual_seed(1)) * 50  # raw dot products, any scale
    from reseg.models.image_tokens import minmax_normalize

    s_hat = minmax_normalize(sim)
    assert torch.allclose(s_hat.amin(1), torch.zeros(3)) and torch.allclose(s_hat.amax(1), torch.ones(3))
    full = AF.prior_full_resolution(s_hat, (4, 4), (37, 53), aspect, 32)
    assert full.shape == (3, 37, 53) and float(full.min()) >= 0.0 and float(full.max()) <= 1.0 + 1e-6
    assert float(full.max()) > 0.5  # the map is not flattened away


def test_prior_lines_up_with_sams_frame_for_a_non_square_image():
    """A map at the original size, taken to SAM's mask-prompt frame and brought back by SAM's own
    postprocessing (the path SAM's logits take), lands where it started."""
    from reseg.models.mask_sources.sam import SAMMaskSource

    sam = SAMMaskSource(variant="custom", image_size=256, prompt_dim=32,
                        encoder=dict(embed_dim=32, depth=1, num_heads=2), decoder_depth=1, decoder_mlp_dim=64,
                        decoder_heads=2, iou_head_hidden_dim=32)
    h, w = 90, 160
    _, sizes = sam.preprocess([np.zeros((h, w, 3), np.uint8)])
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    blob = torch.exp(-((xx - 120) ** 2 + (yy - 30) ** 2) / (2 * 12.0 ** 2))[None]
    p = AF.to_sam_mask_frame(blob, sam.mask_input_size)
    assert p.shape == (1, 1, 64, 64)
    back = sam.postprocess(p, sizes[0], (h, w))[0]
    peak = divmod(int(back.argmax()), w)
    assert abs(peak[0] - 30) <= 1 and abs(peak[1] - 120) <= 1
    assert float((back - blob[0]).abs().max()) < 0.05
    # the same map centred in the frame (LLaVA-style padding) would be 16 rows (64 px at 256) off
    wrong = F.pad(F.interpolate(blob[None], (36, 64), mode="bilinear", antialias=True), (0, 0, 14, 14))
    assert float((sam.postprocess(wrong, sizes[0], (h, w))[0] - blob[0]).abs().max()) > 0.5


# ------------------------------------------------------------------------------ Gaussian soft target (§1.7)
def test_gaussian_kernel_shrinks_on_small_inputs():
    assert AF.gaussian_kernel_size(24, 24, 31) == (23, 11)  # the M2T token grid of §1.7
    assert AF.gaussian_kernel_size(40, 40, 31) == (31, 15)
    assert AF.gaussian_kernel_size(30, 50, 31) == (29, 14)  # min side 30 is even -> 29
    assert AF.gaussian_kernel_size(2, 5, 31) == (3, 1)  # never below 3
    assert AF.gaussian_kernel_size(3, 3, 4) == (3, 1)  # an even ksize is made odd first (4 -> 5 -> 3)
    assert AF.gaussian_kernel_size(1, 5, 31) == (1, 0)
    for h, w in [(24, 24), (2, 5), (30, 50), (7, 31)]:
        assert AF.gaussian_soft_target(torch.ones(1, h, w), 31).shape == (1, h, w)  # same size out


def test_gaussian_kernel_values():
    k = AF.gaussian_kernel(3, 1.0)
    assert float(k.sum()) == pytest.approx(1.0)
    assert float(k[0, 0] / k[1, 1]) == pytest.approx(math.exp(-1)) and float(k[0, 1] / k[1, 1]) == pytest.approx(
        math.exp(-0.5))


def test_the_separable_gaussian_is_the_2d_convolution_of_the_code():
    m = (torch.rand(3, 45, 70, generator=torch.Generator().manual_seed(5)) > 0.8).float()
    k, pad = AF.gaussian_kernel_size(45, 70)
    heat = F.conv2d(F.pad(m[:, None], (pad,) * 4, mode="reflect"), AF.gaussian_kernel(k)[None, None])[:, 0]
    torch.testing.assert_close(AF.gaussian_soft_target(m), heat / heat.flatten(1).amax(1)[:, None, None])


def test_gaussian_target_by_hand_reflect_padded_and_max_normalised():
    # One pixel at (1, 1) of a 4x4 mask, k = 3, sigma = 1 (weights 1, e^-1/2 at distance 1, e^-1 diagonal).
    # Reflect padding mirrors (1, 1) to (-1, -1), (-1, 1) and (1, -1), so the corner (0, 0) collects four
    # diagonal weights 4/e: the maximum (with zero padding it would get one, e^-1, and the centre 1 would win).
    m = torch.zeros(1, 4, 4)
    m[0, 1, 1] = 1
    g = AF.gaussian_soft_target(m, ksize=3, sigma=1.0)[0]
    e = math.e
    assert float(g[0, 0]) == pytest.approx(1.0)
    assert float(g[1, 1]) == pytest.approx(e / 4)  # 1 / (4/e)
    assert float(g[0, 1]) == pytest.approx(e ** 0.5 / 2)  # 2 e^-1/2 / (4/e)
    assert float(g[0, 2]) == pytest.approx(0.5)  # 2 e^-1 / (4/e)
    assert float(g[2, 2]) == pytest.approx(0.25)  # e^-1 / (4/e)
    assert g[3].abs().max() == 0 and g[:, 3].abs().max() == 0
    assert AF.gaussian_soft_target(torch.zeros(2, 5, 5)).abs().max() == 0  # empty masks stay 0, no NaN


# ------------------------------------------------------------------------------ TMCC (§1.7)
def test_mask_to_token_grid_follows_the_clip_preprocessing():
    m = torch.zeros(1, 4, 8)
    m[0, :, :4] = 1  # the left half of a wide image; S = 8, a 2x2 grid (nearest picks rows/cols 0 and 4)
    assert AF.mask_to_token_grid(m, (2, 2), 8, "pad_corner").tolist() == [[[1.0, 0.0], [0.0, 0.0]]]  # padded below
    assert AF.mask_to_token_grid(m, (2, 2), 8, "pad").tolist() == [[[0.0, 0.0], [1.0, 0.0]]]  # centred: rows 2-5
    # the antialiased resize leaves fractional values at the border (§1.7)
    m = torch.zeros(1, 8, 8)
    m[0, :, :3] = 1
    assert AF.mask_to_token_grid(m, (4, 4), 4, "pad_corner")[0, 0].tolist() == [1.0, 0.5, 0.0, 0.0]


def test_t2m_by_hand_with_the_image_wide_positive_weight():
    # ksize 1 makes G the identity, so the target is the mask itself; x is a [0, 1] map fed as logits.
    x = torch.tensor([[[0.5, 0.0], [1.0, 0.25]]])
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    bce, dice = AF.t2m_loss(x, m, ksize=1)
    w = 3.0  # (4 - 1) / 1
    assert float(bce[0]) == pytest.approx((w * softplus(-0.5) + softplus(0.0) + softplus(1.0) + softplus(0.25)) / 4)
    p = [sigmoid(0.5), sigmoid(0.0), sigmoid(1.0), sigmoid(0.25)]
    assert float(dice[0]) == pytest.approx(1 - (2 * w * p[0] + 1e-6) / (sum(p) + w + 1e-6))
    # w+ is computed over all masks of the image together: with a second mask of 3 pixels, (8 - 4) / 4 = 1
    bce2, dice2 = AF.t2m_loss(x.expand(2, -1, -1), torch.cat([m, 1 - m]), ksize=1)
    assert float(bce2[0]) == pytest.approx((softplus(-0.5) + softplus(0.0) + softplus(1.0) + softplus(0.25)) / 4)
    assert float(dice2[0]) == pytest.approx(1 - (2 * p[0] + 1e-6) / (sum(p) + 1 + 1e-6))


def test_t2m_clean_variant_reads_the_map_as_probabilities():
    x = torch.tensor([[[0.5, 0.2], [0.9, 0.25]]])
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    bce, dice = AF.t2m_loss(x, m, ksize=1, inputs="probabilities")
    w = 3.0
    expected = (-w * math.log(0.5) - math.log(0.8) - math.log(0.1) - math.log(0.75)) / 4
    assert float(bce[0]) == pytest.approx(expected, rel=1e-5)
    assert float(dice[0]) == pytest.approx(1 - (2 * w * 0.5 + 1e-6) / (1.85 + w + 1e-6))


def test_t2m_softens_the_target_with_the_default_gaussian():
    x = torch.rand(1, 40, 40, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(1, 40, 40)
    m[0, 10:30, 10:30] = 1
    y = AF.gaussian_soft_target(m, 31, 7.0)
    w = (y.numel() - float(y.sum())) / float(y.sum())
    bce, _ = AF.t2m_loss(x, m)
    assert float(bce[0]) == pytest.approx(float(AF.soft_bce(x, y, w)[0]))
    assert float(bce[0]) != pytest.approx(float(AF.t2m_loss(x, m, ksize=1)[0][0]), rel=1e-3)


def test_m2t_by_hand_is_lisas_bce_and_dice_against_the_token_target():
    # A 4x4 image with its top-left quadrant, S = 4, a 2x2 grid: the target cell is (0, 0).
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 1
    s_hat = torch.tensor([[1.0, 0.0, 0.5, 0.25]])
    bce, dice = AF.m2t_loss(s_hat, m, (2, 2), 4, "pad_corner", ksize=1)
    assert float(bce[0]) == pytest.approx((softplus(-1.0) + softplus(0.0) + softplus(0.5) + softplus(0.25)) / 4)
    p = [sigmoid(1.0), sigmoid(0.0), sigmoid(0.5), sigmoid(0.25)]
    assert float(dice[0]) == pytest.approx(1 - (2 * p[0] / 1000 + 1e-6) / ((sum(p) + 1) / 1000 + 1e-6))
    # the same numbers as the LISA losses every [SEG] head shares
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert float(bce[0]) == pytest.approx(float(sigmoid_bce_loss(s_hat.reshape(1, 2, 2), target)[0]))
    assert float(dice[0]) == pytest.approx(float(dice_loss(s_hat.reshape(1, 2, 2), target)[0]))


def test_m2t_on_the_official_grid_uses_the_shrunk_kernel():
    m = torch.zeros(1, 336, 448)
    m[0, 100:200, 200:300] = 1
    target = AF.gaussian_soft_target(AF.mask_to_token_grid(m, (24, 24), 336, "pad_corner"))
    manual = AF.gaussian_soft_target(AF.mask_to_token_grid(m, (24, 24), 336, "pad_corner"), ksize=23)
    torch.testing.assert_close(target, manual)  # 31 adapts to 23 on 24x24 (§1.7)
    # sigma 7 on 24 cells: a wide blob, non-zero on 528 of 576 cells for a target covering 30
    assert float(target.max()) == pytest.approx(1.0)
    assert int((AF.mask_to_token_grid(m, (24, 24), 336, "pad_corner") > 0).sum()) == 30
    assert int((target > 0).sum()) == 528 and 0.4 < float(target[0, 0, 5]) < 0.6


# ------------------------------------------------------------------------------ the head
K = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_model_cfg(str(tmp_path_factory.mktemp("tok") / "tokenizer"), head="AnchorSegHead")
    cfg["head"].update(num_latents=K)
    return MODELS.build(cfg)


def test_anchorseg_plugin_loads_through_its_entry_point_and_builds_from_the_registry():
    from reseg import plugins
    from reseg.models.heads import SegTokenHead
    from reseg_anchorseg.head import AnchorSegHead

    rec = {p.name: p for p in plugins.loaded_plugins()}["anchorseg"]
    assert rec.dist == "reseg" and rec.module == "reseg_anchorseg.plugin"
    assert rec.registered == {"heads": ["AnchorSegHead"], "checkpoint_converters": ["anchorseg"]}
    head = HEADS.build(dict(type="AnchorSegHead"))
    assert type(head) is AnchorSegHead and isinstance(head, SegTokenHead)  # the core's [SEG] family
    # the released script's values (§1.2, §1.7, §1.8)
    assert (head.num_latents, head.ce_weight, head.bce_weight, head.dice_weight) == (7, 1.0, 2.0, 2.0)
    assert (head.gaussian_ksize, head.gaussian_sigma, head.tmcc_inputs, head.seg_convention) == (
        31, 7.0, "logits", "previous")
    assert head.special_tokens == ("[SEG]",) + tuple(f"[LATENT{k}]" for k in range(7))
    rej = HEADS.build(dict(type="AnchorSegHead", num_latents=2, rej_token="[REJ]"))
    assert rej.special_tokens == ("[SEG]", "[REJ]", "[LATENT0]", "[LATENT1]")


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_latents=0), r"model\.head\.num_latents must be a positive int, got 0"),
    (dict(tmcc_inputs="sigmoid"), r"model\.head\.tmcc_inputs must be one of \['logits', 'probabilities'\]"),
    (dict(latent_token="[LAT]"), r"model\.head\.latent_token must be a format string"),
    (dict(gaussian_sigma=0), r"model\.head\.gaussian_sigma must be > 0"),
    (dict(image_aspect="stretch"), r"model\.head\.image_aspect must be None or one of \['crop', 'pad', 'pad_corner'\]"),
])
def test_bad_head_values_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HEADS.build(dict(type="AnchorSegHead", **kwargs))


def _gathered(model, sample):
    """The teacher-forced ("val") batch of ``sample`` after the LLM pass, and its [SEG] slots."""
    ctx = model.prepare([sample], "val")
    model.run_lmm(ctx)
    return ctx, ctx.slots.where(kind="mask")


def test_every_seg_of_an_answer_gets_k_consecutive_latents(model):
    head, lmm = model.head, model.lmm
    s = toy_sample(n_queries=2)
    for mode in ("train", "val"):
        for conv in head.build_conversations(s, mode):
            assert conv.answer.count("[SEG]") == 1 and "[LATENT0][LATENT1][LATENT2][SEG]" in conv.answer
            ids, _ = lmm.encode(conv.prompt, conv.answer)
            col = ids.index(head.seg_id)
            assert ids[col - K: col] == head.latent_ids
    assert head.build_conversations(s, "generate")[0].answer is None  # generated at inference
    # the latents are supervised by the text loss like any answer token (§1.2)
    ids, labels = lmm.encode(*next((c.prompt, c.answer) for c in head.build_conversations(s, "train")))
    assert all(labels[ids.index(t)] == t for t in head.latent_ids)


def test_the_head_reads_the_bank_at_the_official_offsets(model):
    head = model.head
    with torch.no_grad():
        ctx, slots = _gathered(model, toy_sample(n_queries=2))
        sim = head(ctx)["sim"]
    anchor, latents = slots.states, ctx.hidden_at(slots, range(-K, 0))
    ids, hidden = ctx.tokens["input_ids"], ctx.lmm_out["hidden"]
    for n, row in enumerate(slots.conv.tolist()):
        col = int((ids[row] == head.seg_id).nonzero()[0])
        torch.testing.assert_close(anchor[n], hidden[row, col - 1])  # [LATENT{K-1}]
        torch.testing.assert_close(latents[n], hidden[row, col - 1 - K: col - 1])
        decision = col + head.decision_offset
        assert decision == col - K - 1 and int(ids[row, decision + 1]) == head.latent_ids[0]
        img = hidden[row][ctx.lmm_out["image_positions"][row]]
        torch.testing.assert_close(sim[n], img @ anchor[n])  # raw dot product with every image token


def _capture_decoder(model):
    seen = []

    def hook(module, args, kwargs):
        seen.append({k: kwargs[k].detach() for k in ("sparse_prompt_embeddings", "dense_prompt_embeddings")})

    return seen, model.mask_source.sam.mask_decoder.register_forward_pre_hook(hook, with_kwargs=True)


def test_sam_gets_latents_then_anchor_plus_slots_and_the_prior_as_dense_prompt(model):
    head, sam = model.head, model.mask_source.sam
    s = toy_sample(n_queries=2)
    seen, h = _capture_decoder(model)
    try:
        with torch.no_grad():
            ctx, slots = _gathered(model, s)
            sim = head(ctx)["sim"]
            z_lat = head.latent_projection(ctx.hidden_at(slots, range(-K, 0)))
            z_anc = head.projection(slots.states)
            _, full = head.prior(sim, s.size, ctx.frames[0])
            dense = sam.prompt_encoder.mask_downscaling(AF.to_sam_mask_frame(full, model.mask_source.mask_input_size))
    finally:
        h.remove()
    sparse = seen[0]["sparse_prompt_embeddings"]
    assert sparse.shape == (2, K + 1, 32)  # 8 tokens for K = 7 (§1.4); no point or padding token
    torch.testing.assert_close(sparse[:, :K], z_lat + head.slot_pos[:K])
    torch.testing.assert_close(sparse[:, K], z_anc + head.slot_pos[K])  # the anchor comes last
    torch.testing.assert_close(seen[0]["dense_prompt_embeddings"], dense)  # P through mask_downscaling
    assert not torch.allclose(dense[0], dense[1])  # each query its own prior, not broadcast


def test_without_the_prior_sam_gets_its_no_mask_embedding(model):
    head = model.head
    seen, h = _capture_decoder(model)
    head.use_prior = False
    try:
        with torch.no_grad():
            model.predict([toy_sample(n_queries=1)])
    finally:
        head.use_prior = True
        h.remove()
    no_mask = model.mask_source.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    dense = seen[0]["dense_prompt_embeddings"]
    torch.testing.assert_close(dense, no_mask.expand_as(dense))


def test_mask_token_offset_is_the_decoders_mask_tokens_plus_the_embedding(model):
    src = model.mask_source
    emb = torch.randn(1, 32, 4, 4, generator=torch.Generator().manual_seed(3))
    sparse = torch.randn(2, K + 1, 32, generator=torch.Generator().manual_seed(4))
    offset = model.head.mask_token_pos
    low, _ = src.decode(emb, sparse, mask_token_offset=offset)
    shifted = copy.deepcopy(src)
    with torch.no_grad():
        shifted.sam.mask_decoder.mask_tokens.weight += offset
    torch.testing.assert_close(low, shifted.decode(emb, sparse)[0])  # what the official decoder computes (§1.6)
    assert not torch.allclose(low, src.decode(emb, sparse)[0])
    with pytest.raises(ValueError, match=r"mask_token_offset must be \[4, 32\]"):
        src.decode(emb, sparse, mask_token_offset=offset[:2])


def test_mask_downscaling_trains_only_when_the_prior_is_used(tmp_path):
    cfg = tiny_model_cfg(str(tmp_path / "tok"), head="AnchorSegHead")
    cfg["head"].update(num_latents=1, use_prior=False)
    m = MODELS.build(cfg)
    pe = m.mask_source.sam.prompt_encoder
    assert not any(p.requires_grad for p in pe.parameters())  # the tiny base freezes the prompt encoder
    cfg["head"].update(use_prior=True)
    pe = MODELS.build(cfg).mask_source.sam.prompt_encoder
    assert all(p.requires_grad for p in pe.mask_downscaling.parameters())
    assert not pe.no_mask_embed.weight.requires_grad and not pe.point_embeddings[0].weight.requires_grad


def _mask_loss_backward(model, samples):
    model.zero_grad()
    losses = model(samples, mode="loss")
    (losses["loss_mask_bce"] + losses["loss_mask_dice"]).backward()
    return losses


def test_mask_gradient_reaches_lora_through_the_prior_alone(model, monkeypatch):
    head = model.head
    lora = [p for n, p in model.lmm.model.named_parameters() if "lora_B" in n]
    plain = head.sparse_prompt
    monkeypatch.setattr(head, "sparse_prompt", lambda a, l: plain(a, l).detach())  # Z carries no gradient

    def lora_grad():
        _mask_loss_backward(model, [toy_sample(n_queries=2)])
        return sum(float(p.grad.abs().sum()) for p in lora if p.grad is not None)

    through_prior = lora_grad()
    assert head.projection[0].weight.grad is None and head.latent_projection[0].weight.grad is None
    md = model.mask_source.sam.prompt_encoder.mask_downscaling[0].weight
    assert md.grad is not None and float(md.grad.abs().sum()) > 0
    head.use_prior = False
    try:
        without_prior = lora_grad()
    finally:
        head.use_prior = True
    assert through_prior > 0 and without_prior == 0.0


def test_losses_are_the_mask_and_tmcc_terms_weighted_2_and_2(model):
    head = model.head
    s = toy_sample(n_queries=2, seed=1)
    torch.manual_seed(0)
    losses = model([s], mode="loss")
    assert set(losses) == {"loss_text", "loss_mask_bce", "loss_mask_dice", "loss_t2m_bce", "loss_t2m_dice",
                           "loss_m2t_bce", "loss_m2t_dice"}
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    # the TMCC terms of a teacher-forced pass, recomputed from the prior that pass stored
    ctx = model([s], mode="tensor")
    with torch.no_grad():
        out = head(ctx)
        tf = head.loss_by_feat(out, head.get_targets(ctx), ctx)
    s_hat, full = out["priors"][0]
    t = torch.from_numpy(np.stack([q.target for q in s.queries])).float()
    b, d = AF.t2m_loss(full, t)
    frame = model.lmm.image_token_frame
    b2, d2 = AF.m2t_loss(s_hat, t, frame.grid, frame.input_size, frame.aspect)
    assert float(tf["loss_t2m_bce"]) == pytest.approx(2.0 * float(b.mean()), rel=1e-5)
    assert float(tf["loss_t2m_dice"]) == pytest.approx(2.0 * float(d.mean()), rel=1e-5)
    assert float(tf["loss_m2t_bce"]) == pytest.approx(2.0 * float(b2.mean()), rel=1e-5)
    assert float(tf["loss_m2t_dice"]) == pytest.approx(2.0 * float(d2.mean()), rel=1e-5)
    head.tmcc = False
    try:
        assert not any("t2m" in k or "m2t" in k for k in model([s], mode="loss"))
    finally:
        head.tmcc = True


def test_empty_targets_are_left_out_of_the_mask_and_tmcc_losses(model):
    s = toy_sample(n_queries=1)
    s.queries[0].masks = np.zeros_like(s.queries[0].masks)
    losses = model([s], mode="loss")
    assert all(float(losses[k].detach()) == 0.0 for k in losses if k != "loss_text")  # the code's gt.sum() >= 1 filter
    model.head.skip_empty_targets = False
    try:
        assert float(model([s], mode="loss")["loss_mask_bce"].detach()) > 0  # LISA keeps them
    finally:
        model.head.skip_empty_targets = True


def test_teacher_forced_prediction_carries_the_prior_for_visualisation(model):
    with torch.no_grad():
        out = model.predict([toy_sample(n_queries=2)])
    for p in out[0]["predictions"]:
        prior = p.extras["heatmaps"]["prior"]
        assert p.masks.shape == prior.shape == (1, 48, 64)
        assert float(prior.min()) >= 0.0 and float(prior.max()) <= 1.0 + 1e-6


def test_generating_latents_then_seg_yields_a_mask_from_the_same_bank(model, monkeypatch):
    head, lmm = model.head, model.lmm
    s = toy_sample(n_queries=1, seed=2)
    seen, h = _capture_decoder(model)
    try:
        with torch.no_grad():
            tf = model.predict([s])[0]["predictions"][0]
            conv = head.build_conversations(s, "val")[0]
            prompt_ids, _ = lmm.encode(conv.prompt, None)
            answer_ids = lmm.encode(conv.prompt, conv.answer)[0][len(prompt_ids):]  # "[LATENT0..2][SEG]." + EOS
            monkeypatch.setattr(lmm, "generate", lambda prompts, *a, **k: [list(answer_ids) for _ in prompts])
            gen = model.predict([s], generate=True)[0]["predictions"][0]
    finally:
        h.remove()
    assert gen.exists and gen.masks.shape == (1, 48, 64) and "[SEG]" in gen.text
    torch.testing.assert_close(seen[1]["sparse_prompt_embeddings"], seen[0]["sparse_prompt_embeddings"],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gen.masks, tf.masks, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gen.extras["heatmaps"]["prior"], tf.extras["heatmaps"]["prior"], atol=1e-5, rtol=1e-5)


def test_generation_without_seg_means_no_target(model, monkeypatch):
    eos = model.lmm.tokenizer.eos_token_id
    monkeypatch.setattr(model.lmm, "generate", lambda prompts, *a, **k: [[eos] for _ in prompts])
    with torch.no_grad():
        p = model.predict([toy_sample(n_queries=1)], generate=True)[0]["predictions"][0]
    assert not p.exists and p.masks.shape == (0, 48, 64) and p.extras["heatmaps"]["prior"].shape == (0, 48, 64)


def test_rej_is_decided_where_the_model_chooses_between_the_latents_and_rej(tmp_path):
    cfg = tiny_model_cfg(str(tmp_path / "tok"), head="AnchorSegHead")
    cfg["head"].update(num_latents=2, rej_token="[REJ]")
    torch.manual_seed(0)
    m = MODELS.build(cfg)
    s = toy_sample(n_queries=2)
    s.queries[1].masks = np.zeros((0, 48, 64), bool)  # no target: answered with [REJ]
    answers = [c.answer for c in m.head.build_conversations(s, "train")]
    assert "[LATENT0][LATENT1][SEG]" in answers[0] and "[REJ]" in answers[1] and "LATENT" not in answers[1]
    with torch.no_grad():
        ctx, slots = _gathered(m, s)
        ids = ctx.tokens["input_ids"]
        rows, decision = slots.conv, slots.position + m.head.decision_offset
        assert ids[rows, decision + 1].tolist() == [m.head.latent_ids[0]] * 2
        # an argmax of [REJ] at that position rejects the query
        logits = ctx.lmm_out["logits"].clone()
        logits[rows[0], decision[0], m.head.rej_id] = 1e4
        ctx.lmm_out["logits"] = logits
        preds = assemble(ctx, m.head.predict_by_feat(m.head(ctx), ctx))[0]
    assert [p.exists for p in preds] == [False, True]


def test_visualisation_draws_one_heatmap_panel_per_map():
    from reseg.engine.visualization import overlay_panel, prediction_heatmaps

    maps = prediction_heatmaps({"heatmaps": {"prior": torch.tensor([[[0.0, 1.0]], [[0.5, 0.2]]]),
                                             "none": torch.zeros(0, 1, 2)}})
    assert list(maps) == ["prior"] and maps["prior"].tolist() == [[0.5, 1.0]]  # the maximum over the masks
    img = np.zeros((32, 40, 3), np.uint8)
    plain = overlay_panel(img, None, None, "q")
    heat = np.zeros((32, 40), np.float32)
    heat[:, 20:] = 1
    with_map = overlay_panel(img, None, None, "q", heatmaps={"prior": heat})
    s = 256 // 32
    assert with_map.shape[1] == plain.shape[1] + 4 + 40 * s
    panel = with_map[: 32 * s, -40 * s:]
    assert panel[:, -1].mean(0).tolist() != panel[:, 0].mean(0).tolist()  # hot right half, cold left half


def test_the_visualisation_hook_saves_the_prior_next_to_image_mask_and_prediction(tmp_path):
    import cv2

    from reseg.engine.visualization import SegVisualizationHook
    from reseg.structures import QueryPrediction

    hook = SegVisualizationHook(out_dir=str(tmp_path))
    sample = toy_sample(n_queries=2)
    preds = [QueryPrediction(masks=torch.zeros(1, 48, 64), extras={"heatmaps": {"prior": torch.rand(1, 48, 64)}}),
             QueryPrediction(masks=torch.zeros(1, 48, 64))]
    hook._save(None, "test", {"samples": [sample]}, [{"predictions": preds}])
    widths = sorted(cv2.imread(str(p)).shape[1] for p in (tmp_path / "test").glob("*.png"))
    scale = math.ceil(256 / 48)
    assert widths == [3 * 64 * scale + 2 * 4, 4 * 64 * scale + 3 * 4]  # the query with a prior has 4 panels


# ------------------------------------------------------------------------------ configs and training
def _cfg(name):
    from mmengine.config import Config

    return Config.fromfile(str(ROOT / "configs" / "anchorseg" / name))


def test_tiny_anchorseg_config_changes_only_the_head_of_tiny_lisa():
    from mmengine.config import Config

    full = _cfg("anchorseg_tiny_synthref.py").to_dict()
    lisa = Config.fromfile(str(ROOT / "configs/lisa/lisa_tiny_synthref.py")).to_dict()
    head = full["model"].pop("head")
    lisa["model"].pop("head")
    assert full == lisa  # same backbone, SAM, data, schedule and test section
    assert head["type"] == "AnchorSegHead" and (head["num_latents"], head["use_prior"], head["tmcc"]) == (7, True, True)
    assert (head["bce_weight"], head["dice_weight"], head["system_prompt"]) == (2.0, 2.0, "")


@pytest.mark.parametrize("name, prior, tmcc", [("anchorseg-qb_tiny_synthref.py", False, False),
                                               ("anchorseg-qb-prior_tiny_synthref.py", True, False),
                                               ("anchorseg_tiny_synthref.py", True, True)])
def test_ablation_configs_differ_from_the_full_model_in_one_switch_each(name, prior, tmcc):
    cfg = _cfg(name).to_dict()
    full = _cfg("anchorseg_tiny_synthref.py").to_dict()
    head, full_head = cfg["model"].pop("head"), full["model"].pop("head")
    assert cfg == full
    assert (head["use_prior"], head["tmcc"]) == (prior, tmcc)
    assert {k: v for k, v in head.items() if k not in ("use_prior", "tmcc")} == {
        k: v for k, v in full_head.items() if k not in ("use_prior", "tmcc")}


def test_real_anchorseg_config_is_the_released_7b_reasonseg_script():
    cfg = _cfg("anchorseg_llava15-7b_sam-vit-h_reasonseg.py")
    h, lmm, sam = cfg.model.head, cfg.model.lmm, cfg.model.mask_source
    assert (h.type, h.num_latents, h.bce_weight, h.dice_weight, h.ce_weight) == ("AnchorSegHead", 7, 2.0, 2.0, 1.0)
    assert (lmm.lora.r, lmm.lora.lora_alpha, lmm.lora.lora_dropout) == (8, 16, 0.05)
    assert lmm.lora.target_modules.endswith(r"(q_proj|v_proj)")
    assert tuple(lmm.trainable_modules) == ("lm_head", "embed_tokens") and not lmm.train_vision_tower
    assert not lmm.train_projector and lmm.pretrained.endswith("llava-1.5-7b-hf") and lmm.image_aspect == h.image_aspect
    assert sam.variant == "vit_h" and sam.freeze_image_encoder
    assert not sam.freeze_prompt_encoder and sam.train_mask_decoder
    o = cfg.optim_wrapper
    assert (o.optimizer.lr, tuple(o.optimizer.betas), o.optimizer.weight_decay, o.accumulative_counts) == (
        3e-4, (0.9, 0.95), 0.0, 10)
    assert cfg.train_cfg.max_iters == 120 * 500 * 10 and cfg.param_scheduler[0].end == 100 * 10
    assert cfg.param_scheduler[1].end == cfg.train_cfg.max_iters and cfg.param_scheduler[1].end_factor == 0.0
    assert cfg.train_dataloader.batch_size == 2 and cfg.train_dataloader.dataset.type == "ReasonSegDataset"
    assert cfg.train_dataloader.dataset.num_queries_per_sample == 3
    assert cfg.default_hooks.checkpoint.save_best == "seg/cIoU" and cfg.randomness.seed == 42


def test_tiny_anchorseg_trains_through_the_runner(synth_root, tmp_path):
    from reseg.engine.runner import build_runner

    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "work"), max_iters=3, batch_size=2,
                         ckpt_interval=3, head="AnchorSegHead")
    cfg.model.head.update(num_latents=K)
    cfg.train_cfg.val_interval = 1000
    runner = build_runner(cfg)
    head = runner.model.head
    before = {"slot": head.slot_pos.detach().clone(), "mask_tok": head.mask_token_pos.detach().clone(),
              "downscale": runner.model.mask_source.sam.prompt_encoder.mask_downscaling[0].weight.detach().clone()}
    runner.train()
    losses = [float(x) for x in runner.message_hub.get_scalar("train/loss").data[0]]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    for name in ("loss_t2m_bce", "loss_m2t_dice"):
        assert math.isfinite(float(runner.message_hub.get_scalar(f"train/{name}").current()))
    assert (tmp_path / "work" / "iter_3.pth").exists()
    assert not torch.equal(before["slot"], head.slot_pos) and not torch.equal(before["mask_tok"], head.mask_token_pos)
    assert not torch.equal(before["downscale"], runner.model.mask_source.sam.prompt_encoder.mask_downscaling[0].weight)
