"""The RAS mask tokenizer (anchorseg_ras.md §2.4 B-D): pooling math, geometry, frozen encoders,
projector, checkpoints and the tiny / real encoder presets."""
from __future__ import annotations

import itertools
import math
import os
import warnings

import numpy as np
import pytest
import torch

from reseg.models.mask_sources.pool.tokenizer import (
    EMPTY_RULES,
    RESIZE_MODES,
    MaskGeometry,
    MaskTokenizer,
    OpenClipEncoder,
    PositionEncoding,
    TimmEncoder,
    masked_average_pool,
    sincos_position_map,
)
from reseg.models.mask_sources.pool.tokenizer.encoders import open_clip_encoder, timm_encoder
from reseg.registry import MASK_ENCODERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_encoders() -> list[dict]:
    from mmengine.config import Config

    cfg = Config.fromfile(os.path.join(ROOT, "configs", "_base_", "models", "ras_encoders_tiny.py"))
    return [dict(e) for e in cfg.mask_tokenizer.encoders]


TINY_ENCODERS = _tiny_encoders()  # the tiny configs' encoder set


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models are dominated by thread synchronisation on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> MaskTokenizer:
    return MASK_ENCODERS.build(dict(type="MaskTokenizer", encoders=TINY_ENCODERS, out_dim=24))


def _grid_features() -> torch.Tensor:
    """[2, 4, 4]: channel 0 holds 4*row + col (0..15), channel 1 is constant 1."""
    return torch.stack([torch.arange(16.0).view(4, 4), torch.ones(4, 4)])


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------ masked_average_pool
def test_pool_factor_two_bilinear_equals_area_average():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # cells (0,0) (0,1) (1,0) (1,1) fully: (0 + 1 + 4 + 5) / 4
    masks[1, :2, :3] = True  # cell (0,0) fully, cell (0,1) half covered
    v = masked_average_pool(_grid_features(), masks)
    assert torch.allclose(v[0], torch.tensor([2.5, 1.0]))
    assert torch.allclose(v[1], torch.tensor([(0 * 1.0 + 1 * 0.5) / 1.5, 1.0]))  # soft weights


def test_pool_binarize_counts_any_coverage_as_one():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :2, :3] = True
    v = masked_average_pool(_grid_features(), masks, binarize=True)
    assert torch.allclose(v[0], torch.tensor([(0 + 1) / 2, 1.0]))  # Osprey: weights > 0 -> 1


def test_pool_mask_already_on_the_grid():
    masks = torch.zeros(1, 4, 4)
    masks[0, 0, 0] = masks[0, 3, 3] = 1.0
    assert torch.allclose(masked_average_pool(_grid_features(), masks)[0], torch.tensor([7.5, 1.0]))


def test_pool_vanishing_mask_rules():
    # 16 -> 4 bilinear (align_corners=False) samples only source rows/cols 4i+1, 4i+2: a mask on
    # row 12, cols 7-8 touches none of them and vanishes.
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 12, 7:9] = True
    feats = _grid_features()
    # centroid (12.5, 8.0) -> cell (floor(12.5 * 4/16), floor(8.0 * 4/16)) = (3, 2) -> 4*3 + 2 = 14
    assert torch.allclose(masked_average_pool(feats, masks, empty="centroid")[0], torch.tensor([14.0, 1.0]))
    assert torch.equal(masked_average_pool(feats, masks, empty="zero")[0], torch.zeros(2))
    # exact coverage: each pixel is 1/16 of its cell, (3,1) = 13 and (3,2) = 14 weigh the same
    assert torch.allclose(masked_average_pool(feats, masks, empty="area")[0], torch.tensor([13.5, 1.0]))
    assert masked_average_pool(feats, masks).dtype == feats.dtype


def test_pool_empty_mask_is_zero_under_every_rule():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[1, 4:8, 4:8] = True
    for rule in EMPTY_RULES:
        for resize in RESIZE_MODES:
            v = masked_average_pool(_grid_features() + 1, masks, empty=rule, resize=resize)
            assert torch.equal(v[0], torch.zeros(2)), (rule, resize)
            assert v[1, 1] == pytest.approx(1 + 1)


def test_pool_one_feature_map_per_mask_and_no_masks():
    feats = torch.stack([_grid_features(), 2 * _grid_features()])  # [2, C, 4, 4]
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, 1, 2] = True
    assert torch.allclose(masked_average_pool(feats, masks), torch.tensor([[6.0, 1.0], [12.0, 2.0]]))
    assert masked_average_pool(_grid_features(), torch.zeros(0, 4, 4)).shape == (0, 2)


def test_pool_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="empty='dilated'"):
        masked_average_pool(_grid_features(), torch.ones(1, 4, 4), empty="dilated")
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        masked_average_pool(_grid_features(), torch.ones(1, 4))
    with pytest.raises(ValueError, match="batch 3"):
        masked_average_pool(torch.zeros(3, 2, 4, 4), torch.ones(2, 4, 4))


# ------------------------------------------------------------------------------ geometry / position
def test_position_map_values():
    pe = sincos_position_map(8, 4)  # K = 2 frequencies: 1 and grid/4 = 1 (both 1 period per frame)
    assert pe.shape == (8, 4, 4)
    i, j = 1, 3
    assert pe[0, i, j] == pytest.approx(math.sin(2 * math.pi * (i + 0.5) / 4), abs=1e-6)  # sin y
    assert pe[2, i, j] == pytest.approx(math.cos(2 * math.pi * (i + 0.5) / 4), abs=1e-6)  # cos y
    assert pe[4, i, j] == pytest.approx(math.sin(2 * math.pi * (j + 0.5) / 4), abs=1e-6)  # sin x
    assert pe[6, i, j] == pytest.approx(math.cos(2 * math.pi * (j + 0.5) / 4), abs=1e-6)  # cos x
    assert len({tuple(pe[:, a, b].tolist()) for a in range(4) for b in range(4)}) == 16  # every cell distinct
    with pytest.raises(ValueError, match="channels=6"):
        sincos_position_map(6, 4)


def test_pooled_position_lands_where_the_mask_is_on_a_non_square_image():
    tok = MaskTokenizer([dict(type="PositionEncoding", channels=16, grid=4)], norm=None)
    image = _image(60, 120)  # square frame 120 x 120: the image fills rows 0-59; a cell is 30 px
    feats = tok.encode_images([image])
    pe = tok.encoders[0].pos
    masks = np.zeros((4, 60, 120), dtype=bool)
    masks[0, 30:60, 90:120] = True  # bottom-right of the image = frame cell (1, 3)
    masks[1, 0:30, 0:30] = True     # top-left = cell (0, 0)
    masks[2, 59, 119] = True        # one pixel, vanishes on the grid: centroid cell (1, 3)
    masks[3, 0:60, 0:60] = True     # the left half: cells (0..1, 0..1)
    v = tok.pool(feats, 0, masks)
    assert torch.allclose(v[0], pe[:, 1, 3], atol=1e-6)
    assert torch.allclose(v[1], pe[:, 0, 0], atol=1e-6)
    assert torch.allclose(v[2], pe[:, 1, 3], atol=1e-6)
    assert torch.allclose(v[3], pe[:, :2, :2].mean((1, 2)), atol=1e-6)


def test_pixels_follow_the_same_geometry(tiny):
    """Top-left anchored square: a 60 x 120 image fills the top half of every encoder's input,
    the padding is the mean colour (zero after normalisation)."""
    image = np.full((60, 120, 3), 255, dtype=np.uint8)
    for enc in tiny.encoders[:4]:
        pixels, geometry = enc.preprocess([image])
        s = enc.input_size
        assert pixels.shape == (1, 3, s, s) and geometry == [MaskGeometry((60, 120))]
        white = (1 - torch.tensor(enc.mean)) / torch.tensor(enc.std)
        assert torch.allclose(pixels[0, :, : s // 2 - 2].mean((1, 2)), white, atol=1e-4)
        assert pixels[0, :, s // 2 + 2:].abs().max() < 1e-4


def test_geometry_frame_pads_and_crops():
    g = MaskGeometry((3, 5))
    m = torch.ones(1, 3, 5, dtype=torch.bool)
    f = g.frame(m)
    assert f.shape == (1, 5, 5) and f[0, :3].sum() == 15 and f[0, 3:].sum() == 0
    assert g.frame(m, coverage=(0.8, 0.8)).shape == (1, 4, 4)
    with pytest.raises(ValueError, match=r"\[3, 4\]"):
        g.frame(torch.ones(1, 3, 4))


# ------------------------------------------------------------------------------ tokenizer
def test_tiny_encoders_build_with_expected_grids(tiny):
    expected = [("OpenClipEncoder", 32, (8, 8)), ("TimmEncoder", 32, (8, 8)), ("TimmEncoder", 64, (4, 4)),
                ("TimmEncoder", 32, (8, 8)), ("PositionEncoding", 32, (8, 8))]
    got = [(type(e).__name__, e.out_channels, e.grid) for e in tiny.encoders]
    assert got == expected
    assert tiny.feature_dim == 192 and tiny.encoder_channels == [32, 32, 64, 32, 32]
    feats = tiny.encode_images([_image(50, 70), _image(80, 40, seed=1)])
    for maps in feats.maps:
        assert [tuple(m.shape) for m in maps] == [(c, *g) for _, c, g in expected]
        assert all(torch.isfinite(m).all() for m in maps)


def test_encoders_run_once_per_image_however_many_masks(tiny):
    calls: list[int] = []
    hooks = [e.register_forward_hook(lambda mod, args, out: calls.append(out.shape[0])) for e in tiny.encoders]
    try:
        images = [_image(50, 70), _image(40, 40, seed=1)]
        feats = tiny.encode_images(images)
        assert calls == [2] * len(tiny.encoders)  # one batched forward per encoder, 2 images in it
        rng = np.random.default_rng(0)
        for _ in range(3):
            out = tiny.pool(feats, 0, rng.random((40, 50, 70)) > 0.7)
            assert out.shape == (40, 192)
        tiny.pool(feats, 1, rng.random((7, 40, 40)) > 0.5)
        assert len(calls) == len(tiny.encoders)  # pooling never re-runs an encoder
        calls.clear()
        tiny.encode_batch_size = 1
        tiny.encode_images(images)
        assert calls == [1, 1] * len(tiny.encoders)
    finally:
        tiny.encode_batch_size = 8
        for h in hooks:
            h.remove()


def test_encoders_frozen_and_only_the_projector_trains(tiny):
    trainable = {n for n, p in tiny.named_parameters() if p.requires_grad}
    assert trainable == {"projector.0.weight", "projector.0.bias", "projector.2.weight", "projector.2.bias"}
    tiny.train()
    assert tiny.training and tiny.projector.training
    assert not any(m.training for e in tiny.encoders for m in e.modules())
    feats = tiny.encode_images([_image(50, 70)])
    assert not any(m.requires_grad for m in feats.maps[0])
    masks = np.zeros((2, 50, 70), dtype=bool)
    masks[0, :20, :30] = masks[1, 25:, 40:] = True
    tiny.zero_grad(set_to_none=True)
    tokens = tiny(tiny.pool(feats, 0, masks))
    assert tokens.shape == (2, 24)
    tokens.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.projector.parameters())
    assert all(p.grad is None for e in tiny.encoders for p in e.parameters())
    tiny.eval()


def test_pool_norms_and_edge_inputs(tiny):
    feats = tiny.encode_images([_image(50, 70)])
    masks = np.zeros((3, 50, 70), dtype=bool)
    masks[0, 5:30, 10:40] = True
    masks[1, 49, 69] = True  # a single pixel: centroid fallback on every grid
    v = tiny.pool(feats, 0, masks)
    bounds = np.cumsum([0] + tiny.encoder_channels)
    for a, b in itertools.pairwise(bounds):  # layernorm per encoder (no affine)
        assert v[:2, a:b].mean(1).abs().max() < 1e-4
        assert torch.allclose(v[:2, a:b].std(1, unbiased=False), torch.ones(2), atol=1e-2)
    assert torch.equal(v[2], torch.zeros(192))  # an empty mask stays a zero vector
    assert tiny.pool(feats, 0, np.zeros((0, 50, 70), dtype=bool)).shape == (0, 192)
    with pytest.raises(ValueError, match=r"\[M, 50, 70\]"):
        tiny.pool(feats, 0, np.zeros((1, 70, 50), dtype=bool))
    with pytest.raises(IndexError, match="index 1"):
        tiny.pool(feats, 1, masks)
    l2 = MaskTokenizer([dict(type="PositionEncoding", channels=8, grid=4)] * 2, norm="l2")
    w = l2.pool(l2.encode_images([_image(20, 30)]), 0, masks[:1, :20, :30])
    assert torch.allclose(w.view(2, 8).norm(dim=1), torch.ones(2))


def test_build_projector_is_idempotent_and_refuses_another_width():
    tok = MaskTokenizer([dict(type="PositionEncoding", channels=8, grid=4)])
    with pytest.raises(RuntimeError, match="build_projector"):
        tok(torch.zeros(1, 8))
    proj = tok.build_projector(16)
    weight = proj[0].weight.detach().clone()
    assert tok.build_projector(16) is proj and torch.equal(tok.projector[0].weight, weight)
    assert [tuple(p.shape) for p in proj.parameters()] == [(16, 8), (16,), (16, 16), (16,)]
    assert isinstance(proj[1], torch.nn.GELU)
    with pytest.raises(ValueError, match="out_dim=16"):
        tok.build_projector(32)
    assert tok(torch.zeros(3, 8)).shape == (3, 16)
    with pytest.raises(ValueError, match="feature_dim 8"):
        tok(torch.zeros(3, 9))
    assert MaskTokenizer([dict(type="PositionEncoding", channels=8, grid=4)], out_dim=12, hidden_dim=20
                         ).projector[0].out_features == 20


# ------------------------------------------------------------------------------ encoders
def test_timm_vit_drops_prefix_tokens():
    enc = TimmEncoder("vit_small_patch14_reg4_dinov2", img_size=56,
                      model_kwargs=dict(embed_dim=16, depth=1, num_heads=2))
    assert enc.model.num_prefix_tokens == 5 and enc.grid == (4, 4)
    pixels = torch.randn(1, 3, 56, 56)
    fmap = enc(pixels)
    tokens = enc.model.forward_features(pixels)
    assert torch.allclose(fmap[0, :, 1, 2], tokens[0, 5 + 1 * 4 + 2])
    penultimate = TimmEncoder("vit_small_patch14_dinov2", img_size=56, feature=-2,
                              model_kwargs=dict(embed_dim=16, depth=2, num_heads=2))
    assert penultimate(pixels).shape == (1, 16, 4, 4)


def test_open_clip_timm_trunk_convnext():
    enc = OpenClipEncoder(model_cfg=dict(embed_dim=16, vision_cfg=dict(
        timm_model_name="convnext_atto", timm_model_pretrained=False, timm_pool="", timm_proj="linear",
        image_size=64)))
    assert enc.grid == (2, 2) and enc.out_channels == 320
    assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 320, 2, 2)


def test_siglip_grid_coverage_crops_the_unseen_strip():
    enc = TimmEncoder("vit_so400m_patch14_siglip_384", img_size=60,
                      model_kwargs=dict(embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0))
    assert enc.grid == (4, 4) and enc.coverage == (56 / 60, 56 / 60)
    assert MaskGeometry((30, 60)).extent(enc.coverage) == (56, 56)


def test_checkpoints_load_from_local_files(tmp_path):
    from safetensors.torch import save_file

    kwargs = dict(embed_dim=16, depth=1, num_heads=2)
    src = TimmEncoder("vit_small_patch14_dinov2", img_size=56, model_kwargs=kwargs)
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "dino.safetensors"))
    dst = TimmEncoder("vit_small_patch14_dinov2", img_size=56, model_kwargs=kwargs,
                      checkpoint=str(tmp_path / "dino.safetensors"))
    pixels = torch.randn(1, 3, 56, 56)
    assert torch.allclose(src(pixels), dst(pixels))
    with pytest.raises(RuntimeError, match="does not fit timm model 'vit_small_patch14_dinov2'"):
        TimmEncoder("vit_small_patch14_dinov2", img_size=56, model_kwargs=dict(kwargs, depth=2),
                    checkpoint=str(tmp_path / "dino.safetensors"))  # blocks.1.* are missing

    import open_clip

    cfg = dict(embed_dim=16, vision_cfg=dict(image_size=32, patch_size=8, width=16, layers=1, head_width=8),
               text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1))
    clip = open_clip.model.CLIP(**cfg)
    torch.save(clip.state_dict(), tmp_path / "clip.pth")  # full CLIP: the text tower is ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the text tower of a full CLIP checkpoint is expected, not reported
        enc = OpenClipEncoder(model_cfg=cfg, checkpoint=str(tmp_path / "clip.pth"))
    pixels = torch.randn(1, 3, 32, 32)
    clip.visual.output_tokens = True
    with torch.no_grad():
        tokens = clip.visual(pixels)[1]  # [1, 16, 16] after ln_post
    assert torch.allclose(enc(pixels)[0, :, 2, 3], tokens[0, 2 * 4 + 3], atol=1e-5)
    bigger = OpenClipEncoder(model_cfg=cfg, checkpoint=str(tmp_path / "clip.pth"), img_size=48)
    assert bigger.grid == (6, 6)  # position embeddings resized from 4 x 4


def test_missing_checkpoint_names_path_and_key(tmp_path):
    missing = tmp_path / "nowhere" / "siglip.safetensors"
    with pytest.raises(FileNotFoundError) as e:
        TimmEncoder("vit_so400m_patch14_siglip_384", checkpoint=str(missing), config_key="enc")
    assert str(missing) in str(e.value) and "enc.checkpoint" in str(e.value)


def test_real_encoders_fail_on_missing_files_before_building_anything(tmp_path, monkeypatch):
    from mmengine.config import Config

    cfg = Config.fromfile(os.path.join(ROOT, "configs", "_base_", "models", "ras_encoders_real.py"))
    names = [e.get("model_name") for e in cfg.mask_tokenizer.encoders]
    assert names == ["ViT-L-14-336-quickgelu", "vit_so400m_patch14_siglip_384", "convnext_xxlarge",
                     "vit_large_patch14_dinov2", None]

    def never(*args, **kwargs):
        raise AssertionError("a real encoder was built although its checkpoint is missing")

    monkeypatch.setattr(timm_encoder, "_create_timm_model", never)
    monkeypatch.setattr(open_clip_encoder, "_build_open_clip_visual", never)
    monkeypatch.chdir(tmp_path)  # relative checkpoints/ paths resolve to nothing here
    with pytest.raises(FileNotFoundError) as e:
        MASK_ENCODERS.build(cfg.mask_tokenizer)
    msg = str(e.value)
    for i, enc in enumerate(cfg.mask_tokenizer.encoders[:4]):
        assert enc.checkpoint in msg and f"model.mask_source.tokenizer.encoders[{i}].checkpoint" in msg


def test_tiny_config_is_a_mask_tokenizer_of_the_five_encoder_kinds():
    from mmengine.config import Config

    cfg = Config.fromfile(os.path.join(ROOT, "configs", "_base_", "models", "ras_encoders_tiny.py"))
    assert cfg.mask_tokenizer.type == "MaskTokenizer"
    assert [e["type"] for e in TINY_ENCODERS] == ["OpenClipEncoder", "TimmEncoder", "TimmEncoder", "TimmEncoder",
                                                  "PositionEncoding"]


def test_registered_types():
    for name in ("MaskTokenizer", "TimmEncoder", "OpenClipEncoder", "PositionEncoding"):
        assert name in MASK_ENCODERS
    with pytest.raises(ValueError, match="exactly one"):
        OpenClipEncoder()
    with pytest.raises(ValueError, match="norm='batch'"):
        MaskTokenizer([dict(type="PositionEncoding")], norm="batch")
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmEncoder("vit_nonexistent_patch99")
    assert PositionEncoding(channels=8, grid=2).preprocess([_image(3, 4)])[0].shape == (1, 3, 0, 0)
