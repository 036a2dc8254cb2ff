"""The RAS head (plugins/reseg_ras): sequence layout, mask tokens, loss, labels, selection, the AR baseline,
the inference API and training through the runner (anchorseg_ras.md §2)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reseg_ras import functional as RF
from script_runner import run_script
from tiny import ras_model_cfg

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="module")
def model(tiny_tokenizer_dir):
    from reseg.plugins import load_plugins
    from reseg.registry import MODELS

    load_plugins()
    torch.manual_seed(0)
    m = MODELS.build(ras_model_cfg(tiny_tokenizer_dir, classifier_hidden=0))
    m.eval()
    return m


@pytest.fixture(scope="module")
def ores(synth_root):
    from reseg.datasets.maskgroups import MaskGroupsDataset

    ds = MaskGroupsDataset(synth_root / "mask_groups", split="validation", test_mode=True)
    hybrid = next(ds[i] for i in range(len(ds)) if any(q.reference_masks is not None for q in ds[i].queries))
    return dict(ds=ds, hybrid=hybrid)


def _one_query(sample, k: int):
    return dataclasses.replace(sample, queries=[sample.queries[k]])


def _hybrid_query(sample):
    k = next(k for k, q in enumerate(sample.queries) if q.reference_masks is not None)
    return _one_query(sample, k)


# ------------------------------------------------------------------ layout


def test_sequence_layout_image_pool_query_with_reference_then_the_second_copy(model, ores):
    s = _hybrid_query(ores["hybrid"])
    n = s.candidate_masks.shape[0]
    ctx = model.prepare([s], "val")
    ids = ctx.tokens["input_ids"][0].tolist()
    tid = model.head.token_ids
    pre, ref, slot = tid[RF.POOL_PRE], tid[RF.REF_PRE], tid[RF.MASK_SLOT]
    img = model.lmm.image_token_id
    assert ids.count(pre) == 2 * n and ids.count(ref) == 1 and ids.count(slot) == 2 * n + 1
    # the last 2N tokens are the second copy: N (<mask-pool-pre>, <mask-emb>) pairs
    assert ids[-2 * n:] == [pre, slot] * n
    # order: image tokens < first copy < reference < "ASSISTANT:" < second copy
    first_pre = ids.index(pre)
    assert max(i for i, t in enumerate(ids) if t == img) < first_pre
    ref_pos = ids.index(ref)
    assert first_pre + 2 * n <= ref_pos < len(ids) - 2 * n
    assert ids[first_pre: first_pre + 2 * n] == [pre, slot] * n


def test_second_copy_sees_the_query_and_first_copy_does_not(model, ores):
    """Causal attention: the first copy's states cannot depend on the text after it (§2.2)."""
    s = _one_query(ores["ds"][0], 0)
    other = dataclasses.replace(s, queries=[dataclasses.replace(s.queries[0], text="the biggest blue star")])
    slot = model.head.token_ids[RF.MASK_SLOT]
    hid, logits = [], []
    with torch.no_grad():
        for x in (s, other):
            ctx = model.prepare([x], "val")
            model.run_lmm(ctx)
            assert "logits" not in ctx.lmm_out  # selection reads hidden states only: no LM head pass
            cols = (ctx.tokens["input_ids"][0] == slot).nonzero(as_tuple=True)[0]
            n = x.candidate_masks.shape[0]
            hid.append(ctx.lmm_out["hidden"][0, cols[:n]])
            logits.append(model.head(ctx)["logits"][0])
            # the classifier reads the second copy: the last n mask tokens, at the token ("at")
            second = ctx.slots.where(kind="candidate")
            assert second.position.tolist() == cols[-n:].tolist() and second.read.tolist() == cols[-n:].tolist()
    assert torch.allclose(hid[0], hid[1], atol=1e-5)
    assert (logits[0] - logits[1]).abs().max() > 1e-4


def test_mask_embeddings_are_written_at_the_mask_slots(model, ores):
    s = _hybrid_query(ores["hybrid"])
    ctx = model.prepare([s], "val")
    pos, vals = model._input_embeddings(ctx, ctx.tokens["input_ids"])
    assert torch.equal(pos, ctx.tokens["input_ids"] == model.head.token_ids[RF.MASK_SLOT])
    n = s.candidate_masks.shape[0]
    cand = model.mask_source.candidate_embeddings(ctx.pool, 0)
    refs = model.mask_source.embed_masks(ctx.pool, 0, s.queries[0].reference_masks)
    assert torch.equal(vals, torch.cat([cand, refs, cand]))  # first copy, reference, second copy
    emb = model.lmm.embed(ctx.tokens["input_ids"], ctx.image_feats, ctx.conv_image, (pos, vals))
    assert torch.allclose(emb[0][pos[0]], vals)
    assert vals.shape == (2 * n + 1, model.lmm.hidden_size)


def test_encoders_run_once_per_image_and_candidates_are_tokenised_once(model, ores, monkeypatch):
    s = ores["ds"][0]
    assert len(s.queries) >= 2
    tok = model.mask_source.tokenizer
    calls = {"encode": 0, "pool": 0}
    enc, pool = tok.encode_images, tok.pool

    def count_encode(images):
        calls["encode"] += len(images)
        return enc(images)

    def count_pool(feats, index, masks):
        calls["pool"] += 1
        return pool(feats, index, masks)

    monkeypatch.setattr(tok, "encode_images", count_encode)
    monkeypatch.setattr(tok, "pool", count_pool)
    with torch.no_grad():
        model.predict([s, ores["ds"][1]])
    refs = sum(q.reference_masks is not None for x in (s, ores["ds"][1]) for q in x.queries)
    assert calls["encode"] == 2  # two images, however many queries
    assert calls["pool"] == 2 + refs  # each image's pool once, plus each reference


def test_encoders_get_no_gradient_and_the_projector_does(tiny_tokenizer_dir, ores):
    from reseg.registry import MODELS

    m = MODELS.build(ras_model_cfg(tiny_tokenizer_dir))
    m.train()
    losses = m([ores["ds"][0]], mode="loss")
    losses["loss_select"].backward()
    tok = m.mask_source.tokenizer
    assert all(not p.requires_grad for p in tok.encoders.parameters())
    assert tok.projector[0].weight.grad.abs().sum() > 0
    assert m.head.classifier[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ loss and labels


def test_loss_is_the_weighted_bce_of_the_second_copy_logits(model, ores):
    s = ores["ds"][0]
    ctx = model.prepare([s], "train")
    model.run_lmm(ctx)
    out = model.head(ctx)
    labels = model.head.get_targets(ctx)
    per_query = []
    for c, lg in enumerate(out["logits"]):
        y = torch.as_tensor(labels[c])
        w = 1.0 + 4.0 * y.float()  # pos_weight 5
        per_query.append((w * torch.nn.functional.binary_cross_entropy_with_logits(
            lg, y.float(), reduction="none")).mean())
    expected = torch.stack(per_query).mean()
    got = model.head.loss_by_feat(out, labels, ctx)["loss_select"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dataset_pools_use_their_labels_and_other_pools_derive_them(model, ores):
    s = _one_query(ores["ds"][0], 0)
    q = s.queries[0]
    flipped = (1 - q.pool_labels).astype(np.uint8)  # labels only the dataset could know
    own = dataclasses.replace(s, queries=[dataclasses.replace(q, pool_labels=flipped)],
                              meta={**s.meta, "pool_source": "dataset"})
    assert model.head.sample_labels(own, 0).tolist() == flipped.tolist()
    proposed = dataclasses.replace(own, meta={**s.meta, "pool_source": "PrecomputedProposer"})
    from reseg.datasets.maskgroups import match_pool_labels

    assert model.head.sample_labels(proposed, 0).tolist() == match_pool_labels(s.candidate_masks, q.masks).tolist()


# ------------------------------------------------------------------ prediction


def test_prediction_is_the_union_of_the_candidates_above_the_threshold(model, ores, monkeypatch):
    s = ores["ds"][0]
    with torch.no_grad():
        preds = model.predict([s])[0]["predictions"]
    for p in preds:
        probs = p.extras["candidate_probs"]
        assert p.selected == [int(i) for i in np.flatnonzero(probs > model.head.threshold)]
        assert np.array_equal(p.binary_mask(), s.candidate_masks[p.selected].any(0) if p.selected
                              else np.zeros(s.size, bool))
        assert p.exists == bool(p.selected)
    monkeypatch.setattr(model.head, "threshold", 1.0)  # nothing passes: an empty prediction
    with torch.no_grad():
        p = model.predict([s])[0]["predictions"][0]
    assert p.selected == [] and not p.exists and p.masks.shape == (0,) + s.size
    res = dataclasses.replace(s, task="res")  # single-target RES: the top-1 candidate
    with torch.no_grad():
        p = model.predict([res])[0]["predictions"][0]
    assert p.selected == [int(np.argmax(p.extras["candidate_probs"]))]


def test_generate_mode_gives_the_same_selection_as_teacher_forcing(model, ores):
    s = ores["hybrid"]
    with torch.no_grad():
        a = model.predict([s], generate=False)[0]["predictions"]
        b = model.predict([s], generate=True)[0]["predictions"]
    for x, y in zip(a, b):
        assert x.selected == y.selected
        np.testing.assert_allclose(x.extras["candidate_probs"], y.extras["candidate_probs"], atol=1e-6)


def test_a_sample_without_a_pool_needs_a_proposer(model, ores):
    s = dataclasses.replace(ores["ds"][0], candidate_masks=None)
    with pytest.raises(ValueError, match=r"has no candidate pool and model.mask_source.proposer is None"):
        model.predict([s])


# ------------------------------------------------------------------ stage 1


def test_stage1_captions_from_mask_tokens_alone_and_trains_only_the_projector(tiny_tokenizer_dir, ores):
    """anchorseg_ras.md §2.2: only the mask projector trains; no global image tokens in the prompt."""
    from reseg.registry import MODELS

    cfg = ras_model_cfg(tiny_tokenizer_dir, stage="caption")
    cfg["lmm"].update(trainable_modules=[], train_projector=False)
    m = MODELS.build(cfg)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"mask_source.tokenizer"}
    s = ores["ds"][0]
    ctx = m.prepare([s], "train")
    assert len(ctx.conversations) == 1 and not ctx.conversations[0].with_image
    ids = ctx.tokens["input_ids"][0]
    assert int((ids == m.lmm.image_token_id).sum()) == 0
    assert int((ids == m.head.token_ids[RF.MASK_SLOT]).sum()) == s.candidate_masks.shape[0]
    assert ctx.conversations[0].answer == s.meta["caption"]
    loss = m([s], mode="loss")
    assert set(loss) == {"loss_text"}
    loss["loss_text"].backward()
    assert m.mask_source.tokenizer.projector[0].weight.grad.abs().sum() > 0
    no_caption = dataclasses.replace(s, meta={k: v for k, v in s.meta.items() if k != "caption"})
    with pytest.raises(ValueError, match="has no meta\\['caption'\\]"):
        m([no_caption], mode="loss")


# ------------------------------------------------------------------ autoregressive baseline


def test_ar_baseline_trains_on_index_answers_and_selects_what_it_generates(tiny_tokenizer_dir, ores):
    from reseg.registry import MODELS

    torch.manual_seed(0)
    m = MODELS.build(ras_model_cfg(tiny_tokenizer_dir, head="RASARHead"))
    s = ores["ds"][0]
    samples, _ = m.mask_source.prepare([s])
    convs = m.head.build_conversations(samples[0], "train")
    for k, conv in enumerate(convs):
        labels = m.head.sample_labels(samples[0], k)
        assert conv.answer == RF.format_indices(np.flatnonzero(labels))
        n = s.candidate_masks.shape[0]
        assert f"{n} {RF.POOL_PRE}{RF.MASK_SLOT}" in conv.prompt and conv.prompt.endswith("ASSISTANT:")
    loss = m([s], mode="loss")
    assert set(loss) == {"loss_text"} and torch.isfinite(loss["loss_text"])
    m.eval()
    m.max_new_tokens = 6
    with torch.no_grad():
        preds = m.predict([s], generate=True)[0]["predictions"]
    for p in preds:
        sel, invalid = RF.parse_indices(p.text, s.candidate_masks.shape[0])
        assert p.selected == sel and p.extras["invalid_indices"] == invalid
        assert 1 <= p.extras["generated_tokens"] <= 6


# ------------------------------------------------------------------ API, configs, runner


def test_inference_api_selects_from_a_given_pool(tiny_tokenizer_dir, ores, tmp_path):
    from reseg import load_model
    from reseg.registry import MODELS

    torch.manual_seed(0)
    m = MODELS.build(ras_model_cfg(tiny_tokenizer_dir))
    ckpt = tmp_path / "ras.pth"
    torch.save({"state_dict": m.state_dict()}, ckpt)
    seg = load_model(dict(model=ras_model_cfg(tiny_tokenizer_dir)), str(ckpt), device="cpu")
    s = ores["ds"][0]
    q = s.queries[0]
    r = seg.segment(s.image, q.text, reference_masks=q.reference_masks, candidate_masks=s.candidate_masks)
    sel = r.prediction.selected
    assert np.array_equal(r.mask, s.candidate_masks[sel].any(0) if sel else np.zeros(s.size, bool))
    assert r.score == (pytest.approx(float(r.prediction.scores.max())) if sel else None)
    with pytest.raises(ValueError, match="has no candidate pool"):
        seg.segment(s.image, "the red circle")  # no pool and no proposer in this config


@pytest.mark.parametrize("config", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs" / "ras").glob("*.py")))
def test_ras_configs_parse(config):
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO / config))
    assert cfg.model.head.type in ("RASHead", "RASARHead")
    assert cfg.model.mask_source.type == "CandidatePoolSource"


def test_tiny_ras_trains_and_is_scored_on_ores_through_the_runner(synth_root, tiny_tokenizer_dir, tmp_path):
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO / "configs/ras/ras_tiny_synthref-ores.py"))
    root = str(synth_root / "mask_groups")
    cfg.model = ras_model_cfg(tiny_tokenizer_dir)
    cfg.train_dataloader.dataset.data_root = root
    cfg.test_dataloader.dataset.data_root = root
    for d in (cfg.train_dataloader, cfg.test_dataloader):
        d.num_workers = 0
        d.persistent_workers = False
        d.batch_size = 2
    cfg.train_cfg.max_iters = 4
    cfg.train_cfg.val_interval = 10**6  # scored once, by tools/test.py below
    cfg.val_cfg = cfg.val_evaluator = None
    cfg.val_dataloader = None
    cfg.param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=4)]
    cfg.default_hooks.checkpoint.interval = 4
    path = tmp_path / "cfg.py"
    cfg.dump(str(path))
    work = tmp_path / "work"
    run = subprocess.run([sys.executable, str(REPO / "tools/train.py"), str(path), "--work-dir", str(work)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = (work / "last_checkpoint").read_text().strip()
    out = tmp_path / "metrics.json"
    vis = tmp_path / "vis"
    run = subprocess.run([sys.executable, str(REPO / "tools/test.py"), str(path), ckpt, "--work-dir", str(work),
                          "--out-metrics", str(out), "--show-dir", str(vis)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    import cv2

    pngs = sorted(vis.rglob("*.png"))
    assert pngs, "no overlay written"
    panel = cv2.imread(str(pngs[0]))
    sample = next(iter(__import__("reseg.datasets.maskgroups", fromlist=["x"]).MaskGroupsDataset(
        root, split="validation", test_mode=True)))
    h, w = sample.size
    s = max(1, -(-256 // h))
    assert panel.shape[1] == 4 * w * s + 3 * 4  # image | ground truth | prediction | pool
    metrics = json.loads(out.read_text())
    flat = json.dumps(metrics)
    for key in ("ores/gIoU", "ores/text/cIoU", "ores/hybrid/cIoU", "oracle/cIoU"):
        assert key in flat, key


def test_visualisation_outlines_the_pool_and_fills_the_selected_group():
    """Candidate pools with the selected group highlighted (the hook and tools/infer.py)."""
    from reseg.engine.visualization import CANDIDATE_COLOR, PRED_COLOR, overlay_panel, pool_overlay

    img = np.zeros((20, 30, 3), np.uint8)
    pool = np.zeros((2, 20, 30), bool)
    pool[0, 2:8, 2:10] = True
    pool[1, 10:18, 15:28] = True
    out = pool_overlay(img, pool, [1])
    assert tuple(out[2, 5]) == CANDIDATE_COLOR  # candidate 0: outlined only
    assert tuple(out[5, 5]) == (0, 0, 0)  # ... its inside untouched
    inside = out[14, 20].astype(int)  # candidate 1: filled with the prediction colour
    assert inside[0] > 100 and np.argmax(inside) == int(np.argmax(PRED_COLOR))
    assert tuple(out[10, 20]) == (255, 255, 255)  # white outline of the selected candidate
    plain = overlay_panel(img, pool[1], pool[1], "q", min_height=20)
    with_pool = overlay_panel(img, pool[1], pool[1], "q", min_height=20, pool=(pool, [1]))
    assert with_pool.shape[1] == plain.shape[1] + 30 + 4  # one more panel (and separator)


def test_benchmark_ras_times_both_models_on_fixed_size_pools_and_splits_the_time_by_stage(
        synth_root, tiny_tokenizer_dir, tmp_path):
    """tools/benchmark.py ras: both models answer the same queries with pools of exactly N candidates;
    per model it reports the latency, the stages that add up to it (the AR model generates, RAS does
    not) and the tokens generated; the ratio is AR / RAS of the medians."""
    from mmengine.config import Config

    from reseg.engine.checkpoint import save_model_weights
    from reseg.plugins import load_plugins
    from reseg.registry import MODELS

    load_plugins()
    val = dict(dataset=dict(type="MaskGroupsDataset", data_root=str(synth_root / "mask_groups"),
                            split="validation", test_mode=True))
    paths = {}
    for name, head, kw in (("ras", "RASHead", dict(classifier_hidden=0)), ("ar", "RASARHead", {})):
        torch.manual_seed(0)
        cfg = Config(dict(default_scope="reseg", model=ras_model_cfg(tiny_tokenizer_dir, head=head, **kw),
                          val_dataloader=val))
        cfg.dump(str(tmp_path / f"{name}.py"))
        ckpt = save_model_weights(MODELS.build(cfg.model), str(tmp_path / f"{name}.safetensors"))
        paths[name] = (str(tmp_path / f"{name}.py"), ckpt)
    out = tmp_path / "ras.jsonl"
    assert run_script("tools/benchmark.py", [
        "ras", paths["ras"][0], "--checkpoint", paths["ras"][1], "--ar-config", paths["ar"][0],
        "--ar-checkpoint", paths["ar"][1], "--pool-sizes", "4", "9", "--queries", "3",
        "--warmup", "1", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text().splitlines()[-1])
    assert res["queries"] == 3 and set(res["results"]) == {"4", "9"}
    for row in res["results"].values():
        ras, ar = row["ras"], row["ar"]
        assert row["latency_ratio_ar_over_ras"] == pytest.approx(ar["median_s"] / ras["median_s"], abs=0.01)
        for r in (ras, ar):
            assert r["median_s"] > 0 and 0 <= r["cIoU"] <= 1
            # "other" is the latency minus the timed stages: negative would mean stages nest or overlap
            assert r["stages_ms"]["other"] >= 0
            assert r["stages_ms"]["vision tower"] > 0 and r["stages_ms"]["mask tokens (encoders + pooling)"] > 0
        assert "LMM forward" in ras["stages_ms"] and "LMM generate" not in ras["stages_ms"]
        assert "LMM generate" in ar["stages_ms"] and "LMM forward" not in ar["stages_ms"]
        assert ras["mean_generated_tokens"] == 0 and ar["mean_generated_tokens"] >= 1
