"""READ head (spec seg_token_family.md §2): SasP / DtoC pure functions, the head, training, analysis tool."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reseg.registry import HEADS, MODELS
from reseg_read import functional as RF
from script_runner import run_script
from tiny import tiny_model_cfg, tiny_train_cfg, toy_sample

ROOT = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------------------ similarity (§2.3, §2.7)
def test_similarity_is_the_raw_dot_product_with_each_rows_own_image_tokens():
    # Row 0 holds its two image tokens at positions 1-2, row 1 (padded on the left) at 3-4.
    hidden = torch.full((2, 6, 2), 5.0)
    hidden[0, 1], hidden[0, 2] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    hidden[1, 3], hidden[1, 4] = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0])
    pos = torch.zeros(2, 6, dtype=torch.bool)
    pos[0, 1:3] = True
    pos[1, 3:5] = True
    states = torch.tensor([[2.0, 1.0], [1.0, -1.0], [0.0, 1.0]])
    rows = torch.tensor([0, 1, 1])
    sim = RF.similarity_map(hidden, pos, rows, states)
    # <[1,0],[2,1]> = 2, <[0,3],[2,1]> = 3 (> 1: not a cosine); row 1: <[3,1],[1,-1]> = 2, <[1,1],[1,-1]> = 0
    # (Row 0's offset reused for row 1, as the official code does (§2.7), would read row 1's padding
    # [5, 5] at positions 1-2 and give [0, 0] and [5, 5] for the last two states.)
    assert sim.tolist() == [[2.0, 3.0], [2.0, 0.0], [1.0, 1.0]]


def test_similarity_needs_the_same_image_token_count_in_every_row():
    pos = torch.zeros(2, 4, dtype=torch.bool)
    pos[0, :2] = True
    pos[1, :3] = True
    with pytest.raises(ValueError, match=r"same \(non-zero\) number of image tokens, got \[2, 3\]"):
        RF.similarity_map(torch.zeros(2, 4, 3), pos, torch.tensor([0]), torch.zeros(1, 3))


# ------------------------------------------------------------------------------ maps and grids (§2.3 steps 3-4, 7)
#: 1-D bilinear weights (align_corners=False) from 2 samples to 4: rows of [a, b] coefficients.
UP_2_TO_4 = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])


def test_full_resolution_map_undoes_the_centre_crop_with_zeros():
    # 2x2 tokens [[0, 1], [2, 3]] -> min-max [[0, 1/3], [2/3, 1]] -> bilinear to the 4x4 CLIP input.
    # A 4x8 image: short side 4 = CLIP input, long side 8 -> 2 columns cropped on each side, restored as 0.
    sim = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    up = UP_2_TO_4 @ np.array([[0, 1 / 3], [2 / 3, 1]]) @ UP_2_TO_4.T
    expected = np.concatenate([np.zeros((4, 2)), up, np.zeros((4, 2))], 1)
    out = RF.full_resolution_map(sim, (2, 2), (4, 8), "crop", 4)
    assert out.shape == (1, 4, 8)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)


def test_full_resolution_map_undoes_pad_to_square_by_cutting_the_image_out():
    # A 2x4 image padded to a 4x4 square sits in rows 1-2 of the CLIP input.
    sim = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    up = UP_2_TO_4 @ np.array([[0, 1 / 3], [2 / 3, 1]]) @ UP_2_TO_4.T
    out = RF.full_resolution_map(sim, (2, 2), (2, 4), "pad", 4)
    np.testing.assert_allclose(out[0].numpy(), up[1:3], atol=1e-6)


def test_coarse_grid_crop_pads_with_minus_one_and_maps_cells_to_pixels():
    # 4x4 tokens 0..15, d=2 -> 2x2 block means 2.5, 4.5, 10.5, 12.5 -> min-max 0, 0.2, 0.8, 1.
    # A 4x8 image: at grid side 2 the long side is 4, so one -1 column on each side -> 2x4 cells.
    values, cells = RF.coarse_grid(torch.arange(16.0)[None], (4, 4), 2, (4, 8), "crop")
    np.testing.assert_allclose(values[0].numpy(), [-1, 0, 0.2, -1, -1, 0.8, 1, -1], atol=1e-6)
    # x = min((c mod 4 + 0.5) * 8 / 4, 7), y = min((c div 4 + 0.5) * 4 / 2, 3), truncated
    assert cells.tolist() == [[1, 1], [3, 1], [5, 1], [7, 1], [1, 3], [3, 3], [5, 3], [7, 3]]


def test_coarse_grid_pad_marks_cells_off_the_image_and_shifts_by_the_padding():
    # A 4x2 (tall) image padded to a 4x4 square starts (4 - 2) // 2 = 1 px from the left. 2x2 cells of
    # 2 px: centres x = 1 - 1 = 0 (on the image) and 3 - 1 = 2 (off: x >= W); y = 1 and 3.
    values, cells = RF.coarse_grid(torch.tensor([[1.0, 3.0, 5.0, 7.0]]), (2, 2), 1, (4, 2), "pad")
    assert values[0].tolist() == [0.0, -1.0, 1.0, -1.0]  # min-max over the cells on the image: 1 -> 0, 5 -> 1
    assert cells[[0, 2]].tolist() == [[0, 1], [0, 3]]
    # The same tokens read as a centre crop put the points elsewhere (§2.7: the two must agree).
    v_crop, c_crop = RF.coarse_grid(torch.tensor([[1.0, 3.0, 5.0, 7.0]]), (2, 2), 1, (4, 2), "crop")
    assert (v_crop[0] >= 0).sum() == 4 and c_crop.tolist() != cells.tolist()


def test_crop_margins_match_clip_resize_shortest_side():
    assert RF.crop_margins((480, 640), 336) == (0, (336 * 640 // 480 - 336) // 2)  # (0, 56)
    assert RF.crop_margins((640, 480), 12) == (2, 0)  # 12 * 640 // 480 = 16 -> (16 - 12) // 2


def test_down_sample_must_divide_the_grid():
    with pytest.raises(ValueError, match="down_sample=3 must divide the 4x4 token grid"):
        RF.coarse_grid(torch.zeros(1, 16), (4, 4), 3, (8, 8), "crop")


# ------------------------------------------------------------------------------ selection (§2.3 steps 5-6)
VALUES = torch.tensor([0.5, -1.0, 0.9, 0.1, 0.75, 0.0, 0.25, 0.6, 1.0, 0.3])


def test_selection_is_positives_desc_then_negatives_asc_then_neutrals_in_raster_order():
    idx, labels = RF.select_points(VALUES, 7, t_pos=0.75, t_neg=0.25)
    assert idx.tolist() == [8, 2, 4, 5, 3, 6, 0]  # 1.0, 0.9, 0.75 | 0.0, 0.1, 0.25 | 0.5
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, -1]


def test_selection_is_a_top_k_cut_and_never_picks_cells_off_the_image():
    idx, labels = RF.select_points(VALUES, 2, t_pos=0.75, t_neg=0.25)
    assert idx.tolist() == [8, 2] and labels.tolist() == [1, 1]  # enough positives: all positive
    idx, labels = RF.select_points(VALUES, 30, t_pos=0.75, t_neg=0.25)
    assert len(idx) == 9 and 1 not in idx.tolist()  # 9 cells on the image, the -1 cell never
    assert idx.tolist()[-3:] == [0, 7, 9] and labels.tolist()[-3:] == [-1, -1, -1]


def test_selection_ties_keep_raster_order():
    idx, _ = RF.select_points(torch.tensor([0.9, 0.1, 0.9, 0.1]), 4, 0.8, 0.2)
    assert idx.tolist() == [0, 2, 1, 3]


def test_statistical_thresholds_are_mean_plus_minus_k_population_std():
    values = torch.tensor([0.3, -1.0, 0.4, 0.5, 0.6, 0.7])  # on the image: mean 0.5, variance 0.02
    t_pos, t_neg = RF.statistical_thresholds(values, 1.0)
    assert t_pos == pytest.approx(0.5 + math.sqrt(0.02)) and t_neg == pytest.approx(0.5 - math.sqrt(0.02))
    idx, labels = RF.select_points(values, 10, t_pos, t_neg)
    assert idx.tolist() == [5, 0, 2, 3, 4] and labels.tolist() == [1, 0, -1, -1, -1]
    # The code's fixed 0.8 / 0.2 leave all of them neutral.
    assert RF.select_points(values, 10, 0.8, 0.2)[1].tolist() == [-1] * 5


def test_extreme_points_are_the_k_most_and_least_similar_cells():
    idx, labels = RF.extreme_points(torch.tensor([0.5, -1.0, 0.9, 0.1, 0.0, 0.7]), 2)
    assert idx.tolist() == [2, 5, 4, 3] and labels.tolist() == [1, 1, 0, 0]


# ------------------------------------------------------------------------------ DtoC (§2.3 step 8)
def test_dtoc_by_hand_on_a_one_row_map():
    # q = (0, 0) on S~ = [0, 1, 0]: weights exp(S~ - d^2) = 1, e^(1-1) = 1, e^(0-4)
    smap = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    q = RF.dtoc(torch.tensor([[0, 0]]), smap)
    e4 = math.exp(-4)
    assert q[0, 0].item() == pytest.approx((1 + 2 * e4) / (2 + e4), abs=1e-6)
    assert q[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    # d q^x / d S~(u) = w(u) (u - q^x): differentiable with respect to the map
    q[0, 0].backward()
    w1 = 1 / (2 + e4)
    assert smap.grad[0, 1].item() == pytest.approx(w1 * (1 - (1 + 2 * e4) / (2 + e4)), abs=1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
def test_windowed_dtoc_matches_the_dense_formula(kernel):
    g = torch.Generator().manual_seed(0)
    smap = torch.rand(37, 53, generator=g)
    points = torch.tensor([[0, 0], [52, 36], [5, 36], [26, 18], [52, 0], [1, 20]])
    dense = RF.dtoc_dense(points, smap, kernel)
    windowed = RF.dtoc(points, smap, kernel)
    assert (windowed - dense).abs().max().item() < 1e-4
    assert (dense - points).abs().max().item() > 0.05  # the points did move
    if kernel == "gaussian":  # a too-small window is not exact: the comparison can fail
        assert (RF.dtoc(points, smap, kernel, window=1) - dense).abs().max().item() > 1e-4


def test_dtoc_moves_a_point_toward_higher_similarity_by_under_a_pixel():
    smap = torch.zeros(9, 9)
    smap[4, 6] = 1.0  # bright pixel two to the right of q = (4, 4)
    q = RF.dtoc(torch.tensor([[4, 4]]), smap)[0]
    assert 0 < q[0].item() - 4 < 1 and q[1].item() == pytest.approx(4.0)


def test_to_sam_frame_scales_each_axis():
    pts = RF.to_sam_frame(torch.tensor([[10.0, 15.0]]), (30, 40), (48, 64))
    assert pts.tolist() == [[16.0, 24.0]]


def test_similarity_as_points_gradient_flows_only_with_dtoc():
    sim = torch.randn(2, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    kw = dict(aspect="crop", input_size=32, num_points=5, down_sample=1)
    pts, labels = RF.similarity_as_points(sim, (4, 4), (20, 30), **kw)
    assert pts.shape == (2, 5, 2) and labels.shape == (2, 5) and labels.dtype == torch.long
    pts.sum().backward()
    assert sim.grad.abs().sum() > 0
    discrete, _ = RF.similarity_as_points(sim, (4, 4), (20, 30), use_dtoc=False, **kw)
    assert not discrete.requires_grad and torch.equal(discrete, discrete.round())
    assert (pts.detach() - discrete).abs().max() < 1.0  # DtoC is a sub-pixel refinement


def test_best_threshold_mask_picks_the_lowest_best_threshold():
    smap = np.array([[0.1, 0.5], [0.9, 0.3]])
    gt = np.array([[0, 1], [1, 0]], bool)
    t, mask = RF.best_threshold_mask(smap, gt)
    assert t == pytest.approx(0.31) and mask.tolist() == gt.tolist()
    # an ignored pixel does not count: ignoring the 0.3 pixel still gives 0.31 (the lowest best)
    ignore = np.array([[0, 0], [0, 1]], bool)
    assert RF.best_threshold_mask(smap, gt, ignore)[0] == pytest.approx(0.11)


# ------------------------------------------------------------------------------ the head
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_model_cfg(str(tmp_path_factory.mktemp("tok") / "tokenizer"), head="READHead")
    cfg["head"].update(num_points=6, down_sample=1)
    return MODELS.build(cfg)


def test_read_plugin_loads_through_its_entry_point_and_builds_from_the_registry():
    from reseg import plugins
    from reseg.models.heads import SegTokenHead
    from reseg_read.head import READHead

    rec = {p.name: p for p in plugins.loaded_plugins()}["read"]
    assert rec.dist == "reseg" and rec.module == "reseg_read.plugin"
    assert rec.registered == {"heads": ["READHead"], "checkpoint_converters": ["read"]}
    head = HEADS.build(dict(type="READHead", num_points=12, thresholds="statistical", stat_k=1.28))
    assert type(head) is READHead and isinstance(head, SegTokenHead)  # the core's [SEG] family, not LISA's plugin
    assert (head.num_points, head.thresholds, head.stat_k, head.down_sample) == (12, "statistical", 1.28, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_points=0), r"model\.head\.num_points must be a positive int, got 0"),
    (dict(thresholds="otsu"), r"model\.head\.thresholds must be one of \['fixed', 'statistical'\], got 'otsu'"),
    (dict(t_pos=0.2, t_neg=0.8), r"0 <= t_neg < t_pos <= 1, got t_neg=0\.8, t_pos=0\.2"),
    (dict(dtoc_kernel="box"), r"model\.head\.dtoc_kernel must be one of \['gaussian', 'laplace'\]"),
    (dict(image_aspect="stretch"), r"model\.head\.image_aspect must be None or one of \['crop', 'pad'\]"),
    (dict(stat_k=0), r"model\.head\.stat_k must be > 0"),
])
def test_bad_head_values_name_the_key_and_the_expected_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HEADS.build(dict(type="READHead", **kwargs))


def test_grid_and_preprocessing_are_checked_against_the_backbone(model):
    from reseg.models.image_tokens import ImageTokenFrame
    from reseg_read.head import READHead

    assert model.lmm.image_token_frame == ImageTokenFrame(grid=(4, 4), input_size=64, aspect="crop")

    bad = READHead(down_sample=3)
    with pytest.raises(ValueError,
                       match=r"down_sample must be a divisor of the 4x4 image-token grid, one of \[1, 2, 4\]"):
        bad.setup(model.lmm, model.mask_source)
    mismatch = READHead(down_sample=1, image_aspect="pad")
    with pytest.raises(ValueError, match=r"image_aspect='pad' but .* model\.lmm\.image_aspect='crop'"):
        mismatch.setup(model.lmm, model.mask_source)


def _capture_sparse(model):
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["sparse_prompt_embeddings"].detach())

    return seen, model.mask_source.sam.mask_decoder.register_forward_pre_hook(hook, with_kwargs=True)


def test_sparse_prompt_is_points_then_padding_point_then_seg(model):
    s = toy_sample(n_queries=2)
    seen, h = _capture_sparse(model)
    try:
        with torch.no_grad():
            ctx = model.prepare([s], "val")
            model.run_lmm(ctx)
            model.head(ctx)
            seg = model.head.projection(ctx.slots.where(kind="mask").states)
    finally:
        h.remove()
    sparse = seen[0]
    pe = model.mask_source.sam.prompt_encoder
    assert sparse.shape == (2, 6 + 2, 32)  # 6 points + SAM's padding point + [SEG]
    torch.testing.assert_close(sparse[:, -1], seg)  # the projected [SEG] embedding comes last
    # the padding point (label -1): positional encoding zeroed, not_a_point_embed added
    torch.testing.assert_close(sparse[:, 6], pe.not_a_point_embed.weight.expand(2, -1))


def test_mask_gradient_reaches_lora_through_the_dtoc_points_alone(model):
    head = model.head
    lora = [p for n, p in model.lmm.model.named_parameters() if "lora_B" in n]

    def mask_loss_grad():
        model.zero_grad()
        losses = model([toy_sample(n_queries=2)], mode="loss")
        (losses["loss_mask_bce"] + losses["loss_mask_dice"]).backward()
        return sum(float(p.grad.abs().sum()) for p in lora if p.grad is not None)

    head.seg_prompt = False  # no [SEG] embedding in the prompt: the points are the only path
    try:
        through_points = mask_loss_grad()
        assert head.projection[0].weight.grad is None  # the [SEG] projection took no part
        head.dtoc = False  # discrete points carry no gradient
        without_dtoc = mask_loss_grad()
    finally:
        head.seg_prompt, head.dtoc = True, True
    assert through_points > 0 and without_dtoc == 0.0


def test_a_generated_seg_is_decoded_with_points(model, monkeypatch):
    lmm = model.lmm
    seg, eos = model.head.seg_id, lmm.tokenizer.eos_token_id
    monkeypatch.setattr(lmm, "generate", lambda prompts, *a, **k: [[seg, eos] for _ in prompts])
    seen, h = _capture_sparse(model)
    try:
        with torch.no_grad():
            out = model.predict([toy_sample(n_queries=1)], generate=True)
    finally:
        h.remove()
    p = out[0]["predictions"][0]
    assert p.exists and p.masks.shape == (1, 48, 64)
    assert seen[0].shape == (1, 6 + 2, 32)


def test_predictions_carry_the_similarity_heat_map_of_their_seg_tokens(model, monkeypatch):
    s = toy_sample(n_queries=2, seed=5)
    model.eval()
    with torch.no_grad():
        out = model.predict([s], generate=False)[0]["predictions"]
        ctx = model.prepare([s], "val")
        model.run_lmm(ctx)
        slots = ctx.slots.where(kind="mask")
        sim = RF.similarity_map(ctx.lmm_out["hidden"], ctx.lmm_out["image_positions"], slots.conv, slots.states)
    head = model.head
    frame = model.lmm.image_token_frame
    expected = RF.full_resolution_map(sim, frame.grid, s.size, frame.aspect, frame.input_size)
    for k, p in enumerate(out):  # one [SEG] per query, in query order
        smap = p.extras["heatmaps"]["similarity"]
        assert smap.shape == (1, 48, 64)
        torch.testing.assert_close(smap[0], expected[k], atol=1e-5, rtol=1e-5)
        assert float(smap.min()) >= 0.0 and float(smap.max()) <= 1.0
    # free generation: one map per generated [SEG]; no [SEG], an empty stack (nothing drawn)
    lmm = model.lmm
    monkeypatch.setattr(lmm, "generate", lambda prompts, *a, **k: [[head.seg_id, 2] for _ in prompts])
    with torch.no_grad():
        p = model.predict([toy_sample(n_queries=1)], generate=True)[0]["predictions"][0]
    assert p.extras["heatmaps"]["similarity"].shape == (1, 48, 64)
    monkeypatch.setattr(lmm, "generate", lambda prompts, *a, **k: [[2] for _ in prompts])
    with torch.no_grad():
        p = model.predict([toy_sample(n_queries=1)], generate=True)[0]["predictions"][0]
    assert not p.exists and p.extras["heatmaps"]["similarity"].shape == (0, 48, 64)
    head.return_similarity = False
    try:
        with torch.no_grad():
            assert model.predict([s], generate=False)[0]["predictions"][0].extras == {}
    finally:
        head.return_similarity = True


# ------------------------------------------------------------------------------ configs, training, analysis
def test_tiny_read_config_changes_only_the_head_of_tiny_lisa():
    from mmengine.config import Config

    read = Config.fromfile(str(ROOT / "configs/read/read_tiny_synthref.py")).to_dict()
    lisa = Config.fromfile(str(ROOT / "configs/lisa/lisa_tiny_synthref.py")).to_dict()
    head = read["model"].pop("head")
    lisa["model"].pop("head")
    assert read == lisa  # same backbone, SAM, data, schedule and test section
    assert head["type"] == "READHead" and head["down_sample"] == 1 and (head["t_pos"], head["t_neg"]) == (0.8, 0.2)


def test_real_read_config_is_the_released_read_7b_setting():
    from mmengine.config import Config

    cfg = Config.fromfile(str(ROOT / "configs/read/read_llava15-7b_sam-vit-h_reasonseg.py"))
    h = cfg.model.head
    assert (h.type, h.num_points, h.down_sample, h.t_pos, h.t_neg, h.thresholds) == (
        "READHead", 30, 2, 0.8, 0.2, "fixed")
    assert cfg.model.lmm.image_aspect == h.image_aspect == "crop"
    assert cfg.model.lmm.pretrained.endswith("llava-1.5-7b-hf") and cfg.model.mask_source.variant == "vit_h"
    assert cfg.default_hooks.checkpoint.save_best == "seg/cIoU"  # READ selects by cIoU (§2.4)


def _read_train_cfg(synth_root, tmp_path, max_iters):
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "work"), max_iters=max_iters,
                         batch_size=2, ckpt_interval=max_iters, head="READHead")
    cfg.model.head.update(num_points=6, down_sample=1)
    cfg.train_cfg.val_interval = 1000
    return cfg


def test_tiny_read_trains_through_the_runner(synth_root, tmp_path):
    from reseg.engine.runner import build_runner

    runner = build_runner(_read_train_cfg(synth_root, tmp_path, 6))
    decoder = {k: v.clone() for k, v in runner.model.mask_source.sam.mask_decoder.state_dict().items()}
    llm_before = runner.model.lmm.model.lm_head.weight.detach().clone()
    runner.train()
    losses = [float(x) for x in runner.message_hub.get_scalar("train/loss").data[0]]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert (tmp_path / "work" / "iter_6.pth").exists()
    after = runner.model.mask_source.sam.mask_decoder.state_dict()
    assert any(not torch.equal(decoder[k], after[k]) for k in decoder)
    assert not torch.equal(llm_before, runner.model.lmm.model.lm_head.weight)


@pytest.mark.parametrize("head", ["READHead", "LISAHead"])
def test_analyze_seg_token_reports_s_iou_and_p_prompt(synth_root, tmp_path, head):
    cfg = _read_train_cfg(synth_root, tmp_path, 1)
    if head == "LISAHead":  # any [SEG]-family head: P-prompt then uses READ-7B's SasP settings
        cfg.model.head = dict(type="LISAHead")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    cfg_path = tmp_path / "cfg.py"
    cfg.dump(str(cfg_path))
    out = tmp_path / "analysis"
    assert run_script("tools/analyze_seg_token.py", [str(cfg_path), str(ckpt), "--out", str(out), "--max-samples", "3",
                                   "--batch-size", "3"]) == 0
    res = json.loads((out / "analyze_seg_token.json").read_text())
    assert res["head"] == head and res["p_prompt"]["sam"] == "model"
    expected = (6, 1) if head == "READHead" else (30, 2)
    assert (res["p_prompt"]["num_points"], res["p_prompt"]["down_sample"]) == expected
    assert res["n_queries"] > 0 and len(list(out.glob("*.png"))) == res["n_queries"]
    for name in ("S-IoU", "P-prompt", "model"):
        assert 0.0 <= res["metrics"][name]["gIoU"] <= 1.0 and res["metrics"][name]["n"] == res["n_queries"]
    ds_queries = res["queries"]
    gious = [q["S-IoU_iou"] for q in ds_queries]
    assert res["metrics"]["S-IoU"]["gIoU"] == pytest.approx(sum(gious) / (len(gious) + 1e-5))
    # the best threshold is at least as good as t = 0 (the whole image), which it includes
    from mmengine.registry import DefaultScope

    from reseg.registry import DATASETS

    with DefaultScope.overwrite_default_scope("reseg"):
        ds = DATASETS.build(cfg.val_dataloader.dataset)
    whole = []
    for i in range(3):
        for q in ds[i].queries:
            if q.target.any():
                keep = ~q.ignore if q.ignore is not None else np.ones_like(q.target)
                whole.append((q.target & keep).sum() / (keep.sum() + 1e-5))
    assert len(whole) == len(gious) and all(s >= w - 1e-9 for s, w in zip(gious, whole))
