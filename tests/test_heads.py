"""The head contract v2: what the core does for every head (slots, states, targets, predictions, generation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reseg.models.heads import BaseHead, MaskSlot, SlotBatch, mask_slot_targets, seg_token_states
from reseg.models.segmentor import assemble
from reseg.registry import MODELS
from reseg.structures import Query, QueryPrediction, Sample
from tiny import tiny_model_cfg, toy_sample


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    m = MODELS.build(tiny_model_cfg(str(tmp_path_factory.mktemp("tok") / "tokenizer")))
    return m.eval()


# ------------------------------------------------------------------ the [SEG] state read
def test_seg_state_is_the_position_before_the_token():
    # spec seg_token_family.md §1.2 step 2: the state read for [SEG] is the one *before* it.
    seg = 7
    input_ids = torch.tensor([[1, 5, 5, seg, 2, 0], [1, seg, 3, 4, seg, 2]])
    hidden = torch.arange(12, dtype=torch.float32).reshape(2, 6, 1)
    states, rows, cols = seg_token_states(hidden, input_ids, seg)
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [3, 1, 4]
    assert states[:, 0].tolist() == [2.0, 6.0, 9.0]  # hidden[0,2], hidden[1,0], hidden[1,3]
    at, _, _ = seg_token_states(hidden, input_ids, seg, convention="at")
    assert at[:, 0].tolist() == [3.0, 7.0, 10.0]


def test_seg_state_rejects_token_at_position_zero():
    with pytest.raises(ValueError, match="position 0"):
        seg_token_states(torch.zeros(1, 3, 2), torch.tensor([[7, 1, 2]]), 7)


def test_a_slot_kind_outside_the_contract_is_refused():
    with pytest.raises(ValueError, match=r"MaskSlot.kind must be one of \('mask', 'reject', 'candidate'\), got 'seg'"):
        MaskSlot(query=0, token="[SEG]", kind="seg")


# ------------------------------------------------------------------ slots
def test_the_core_reads_each_slot_where_the_head_says(model):
    s = toy_sample(n_queries=2)
    with torch.no_grad():
        batch = model.prepare([s], "val")
        model.run_lmm(batch)
    slots = batch.slots
    ids, hidden = batch.tokens["input_ids"], batch.lmm_out["hidden"]
    seg = model.head.seg_id
    assert [x.query for x in slots.slots] == [0, 1] and slots.conv.tolist() == [0, 1]
    for n in range(2):
        col = int((ids[n] == seg).nonzero()[0])  # the answer's [SEG]
        assert int(slots.position[n]) == col and int(slots.read[n]) == col - 1  # LISA: the previous state
        torch.testing.assert_close(slots.states[n], hidden[n, col - 1])
    model.head.read_rule = "at"
    try:
        with torch.no_grad():
            model.run_lmm(batch)
        assert batch.slots.read.tolist() == batch.slots.position.tolist()
    finally:
        model.head.read_rule = "previous"


def test_slots_bind_to_the_answer_and_a_seg_in_the_question_is_not_one(model):
    s = toy_sample(n_queries=1)
    s.queries[0].text = "the [SEG] thing"  # a literal mask token in the question
    with torch.no_grad():
        batch = model.prepare([s], "val")
        model.run_lmm(batch)
    ids = batch.tokens["input_ids"][0]
    cols = (ids == model.head.seg_id).nonzero(as_tuple=True)[0].tolist()
    assert len(cols) == 2 and batch.slots.position.tolist() == [cols[-1]]  # the answer's, not the question's


def test_a_prompt_only_conversation_binds_its_slots_to_the_last_occurrences(model):
    head = model.head
    s = toy_sample(n_queries=1)
    batch = model.prepare([s], "val")
    conv = batch.conversations[0]
    conv.prompt = conv.prompt + " [SEG] [SEG] [SEG]"
    conv.answer = None
    conv.slots = [MaskSlot(query=0, token="[SEG]"), MaskSlot(query=0, token="[SEG]")]
    batch.tokens = model.lmm.collate([model.lmm.encode(conv.prompt, None)])
    with torch.no_grad():
        model.run_lmm(batch)
    cols = (batch.tokens["input_ids"][0] == head.seg_id).nonzero(as_tuple=True)[0].tolist()
    assert batch.slots.position.tolist() == cols[1:]
    conv.slots = [MaskSlot(query=0, token="[SEG]")] * 4
    with pytest.raises(ValueError, match=r"it holds 3 \[SEG\] tokens but its queries expect 4 masks"):
        model.read_slots(batch, [conv.slots])
    with pytest.raises(ValueError, match=r"names the token '\[MASK\]', which is not one of the head's special_tokens"):
        model.read_slots(batch, [[MaskSlot(query=0, token="[MASK]")]])


def test_targets_are_the_instance_or_the_union_with_ignore_and_existence(model):
    h, w = 48, 64
    m = np.zeros((2, h, w), bool)
    m[0, :10, :10] = True
    m[1, 20:30, 20:30] = True
    ignore = np.zeros((h, w), bool)
    ignore[0] = True
    s = Sample(image=np.zeros((h, w, 3), np.uint8), meta=dict(sample_id="t"), queries=[
        Query(text="both", masks=m, ignore=ignore), Query(text="none", masks=m[:0], exists=False)])
    batch = model.prepare([s], "val")
    flat = [MaskSlot(query=0), MaskSlot(query=0, instance=1), MaskSlot(query=1)]
    n = len(flat)
    z = torch.zeros(n, dtype=torch.long)
    batch.slots = SlotBatch(flat, z, z, z - 1, z - 1, torch.zeros(n, 4), num_images=1)
    t = mask_slot_targets(batch)
    assert t.masks[0].shape == (3, h, w) and t.masks[0].dtype == torch.float32
    assert torch.equal(t.masks[0][0].bool(), torch.from_numpy(m.any(0)))  # the union
    assert torch.equal(t.masks[0][1].bool(), torch.from_numpy(m[1]))  # instance 1
    assert float(t.masks[0][2].sum()) == 0 and t.exists.tolist() == [True, True, False]
    assert t.ignore[0] is None  # the second query has no ignore mask


# ------------------------------------------------------------------ predictions
def test_predictions_group_slots_per_query_and_a_query_without_slot_has_no_target(model):
    s = toy_sample(n_queries=3)
    batch = model.prepare([s], "val")
    flat = [MaskSlot(query=2), MaskSlot(query=0), MaskSlot(query=2)]
    z = torch.zeros(3, dtype=torch.long)
    batch.slots = SlotBatch(flat, torch.tensor([2, 0, 2]), z, z, z, torch.zeros(3, 4), num_images=1)
    from reseg.models.heads import HeadPredictions

    masks = torch.stack([torch.full((48, 64), float(k)) for k in range(3)])
    heat = torch.rand(3, 48, 64)
    preds = assemble(batch, HeadPredictions(masks=[masks], exists=torch.tensor([True, False, True]),
                                            heatmaps={"h": [heat]}))[0]
    assert [p.masks.shape[0] for p in preds] == [1, 0, 2]
    assert preds[0].masks[0, 0, 0] == 1.0 and preds[2].masks[:, 0, 0].tolist() == [0.0, 2.0]
    assert [p.exists for p in preds] == [False, False, True]  # query 0's only slot was rejected; 1 has none
    assert torch.equal(preds[2].extras["heatmaps"]["h"], heat[[0, 2]])
    assert preds[1].extras["heatmaps"]["h"].shape == (0, 48, 64)


def test_a_selection_carries_the_pool_it_indexes(model):
    s = toy_sample(n_queries=1)
    pool = np.zeros((3, 48, 64), bool)
    pool[1, :5] = True
    pool[2, 10:] = True
    s.candidate_masks = pool
    batch = model.prepare([s], "val")
    from reseg.models.heads import HeadPredictions

    p = assemble(batch, HeadPredictions(selected=[[1, 2]], candidate_probs=[np.array([0.1, 0.9, 0.8])]))[0][0]
    assert p.selected == [1, 2] and p.exists and p.pool is batch.samples[0].candidate_masks
    assert np.array_equal(p.masks, pool[[1, 2]]) and p.scores.tolist() == pytest.approx([0.9, 0.8])


def test_ores_scores_a_selection_against_the_pool_the_model_used():
    """A dataset that ships its own pool, a model set to propose its own: the selected indices point into
    the proposer's pool, which travels with the prediction; scoring them in the dataset's pool is wrong."""
    from reseg.evaluation.metrics import ORESMetric

    h, w = 8, 8
    target = np.zeros((1, h, w), bool)
    target[0, :4] = True
    dataset_pool = np.stack([~target[0], target[0]])  # index 0 is the wrong half here
    model_pool = np.stack([target[0], ~target[0]])  # ... and the right one in the model's pool
    s = Sample(image=np.zeros((h, w, 3), np.uint8), task="ores", candidate_masks=dataset_pool,
               meta=dict(sample_id="s0"), queries=[Query(text="top", masks=target)])
    pred = QueryPrediction(masks=model_pool[[0]], selected=[0], pool=model_pool)
    metric = ORESMetric()
    metric.process({"samples": [s]}, [dict(sample_id="s0", predictions=[pred])])
    assert metric.evaluate(1)["ores/gIoU"] == pytest.approx(1.0)


# ------------------------------------------------------------------ generation
def _prefer_seg(model) -> None:
    """Make the random LM head answer [SEG] where it would answer the first token it generates: [SEG]'s
    output row becomes that token's, scaled by 1.01 (0.99 if that token wins with a negative logit)."""
    s = toy_sample(n_queries=1)
    with torch.no_grad():
        batch = model.prepare([s], "generate", with_tokens=False)
        model.generate(batch)
    first = batch.generated[0][0]
    w = model.lmm.model.lm_head.weight
    for scale in (1.01, 0.99):
        w.data[model.head.seg_id] = scale * w.data[first]
        with torch.no_grad():
            if "[SEG]" in model.predict([s], generate=True)[0]["predictions"][0].text:
                return
    raise AssertionError("could not make the tiny LM head say [SEG]")


def test_batched_generation_gives_the_answers_of_one_conversation_at_a_time(tmp_path):
    torch.manual_seed(0)
    m = MODELS.build(tiny_model_cfg(str(tmp_path / "tok"))).eval()
    m.max_new_tokens = 8
    _prefer_seg(m)
    samples = [toy_sample(n_queries=k + 1, seed=k, h=40 + 4 * k) for k in range(3)]
    samples[0].queries[0].is_sentence = True  # the shortest prompt: padded only when batched with the others
    samples[2].queries[2].text = "the big red square in the lower left corner next to the small blue disc"
    with torch.no_grad():
        together = m.predict(samples, generate=True)
        alone = [m.predict([s], generate=True)[0] for s in samples]
    n_seg = 0
    for a, b in zip(together, alone):
        for p, q in zip(a["predictions"], b["predictions"]):
            assert p.text == q.text and p.exists == q.exists
            torch.testing.assert_close(p.masks, q.masks, atol=1e-4, rtol=1e-4)
            n_seg += p.masks.shape[0]
    assert n_seg > 0  # the comparison covered generated mask tokens


def test_generating_the_teacher_forced_answer_predicts_what_teacher_forcing_does(model, monkeypatch):
    s = toy_sample(n_queries=2)
    head, lmm = model.head, model.lmm
    with torch.no_grad():
        tf = model.predict([s], generate=False)[0]["predictions"]
        convs = head.build_conversations(s, "val")
        answers = [lmm.encode(c.prompt, c.answer)[0][len(lmm.encode(c.prompt, None)[0]):] for c in convs]
        monkeypatch.setattr(lmm, "generate", lambda prompts, *a, **k: [list(x) for x in answers])
        gen = model.predict([s], generate=True)[0]["predictions"]
    for p, q in zip(gen, tf):
        assert p.exists and "[SEG]" in p.text and q.text == ""
        torch.testing.assert_close(p.masks, q.masks, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ the v1 contract
def test_a_v1_head_is_refused_with_the_way_to_v2():
    with pytest.raises(TypeError, match=r"implements loss, predict: the head contract v1 .*loss_by_feat"):
        class OldHead(BaseHead):
            def loss(self, ctx, lmm, mask_source):
                return {}

            def predict(self, ctx, lmm, mask_source, generate):
                return []
    with pytest.raises(ImportError, match="BatchContext was the head contract v1"):
        from reseg.models.head import BatchContext  # noqa: F401


def test_a_dumped_selection_from_the_models_own_pool_rescores_as_in_process(tmp_path):
    """The dump keeps which pool a selection indexes; re-scoring a selection from a pool the model
    proposed itself scores what the model answered, not the dataset pool's candidates at those indices."""
    from reseg.evaluation.dump import PredictionDumper, record_to_prediction
    from reseg.evaluation.metrics import ORESMetric

    h, w = 8, 8
    target = np.zeros((1, h, w), bool)
    target[0, :4] = True
    dataset_pool = np.stack([~target[0], target[0]])
    model_pool = np.stack([target[0], ~target[0]])
    s = Sample(image=np.zeros((h, w, 3), np.uint8), task="ores", candidate_masks=dataset_pool,
               meta=dict(sample_id="s0"), queries=[Query(text="top", masks=target)])
    pred = QueryPrediction(masks=model_pool[[0]], selected=[0], pool=model_pool)
    dumper = PredictionDumper(str(tmp_path / "p.jsonl"))
    rec = dumper.encode_sample(s, dict(sample_id="s0", predictions=[pred]))[0]
    assert rec["selected_pool"] == "model" and rec["selected"] == [0]
    back = record_to_prediction(rec, (h, w))
    scores = {}
    for name, p in (("in process", pred), ("re-scored", back)):
        metric = ORESMetric()
        metric.process({"samples": [s]}, [dict(sample_id="s0", predictions=[p])])
        scores[name] = metric.evaluate(1)["ores/gIoU"]
    assert scores == {"in process": 1.0, "re-scored": 1.0}
    own = QueryPrediction(masks=dataset_pool[[1]], selected=[1], pool=dataset_pool.copy())
    assert dumper.encode_sample(s, dict(sample_id="s0", predictions=[own]))[0]["selected_pool"] == "dataset"


def test_the_generation_benchmark_answers_the_same_queries_alike_at_every_batch_size(synth_root, tmp_path):
    """``tools/benchmark.py generate``: queries per second at batch 1 and 2 on the same answers."""
    import json

    from script_runner import run_script
    from tiny import tiny_train_cfg

    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "work"))
    path = str(tmp_path / "cfg.py")
    cfg.dump(path)
    out = tmp_path / "bench.jsonl"
    assert run_script("tools/benchmark.py", ["generate", path, "--queries", "4", "--batch-sizes", "1", "2",
                                             "--max-new-tokens", "3", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text().splitlines()[-1])
    assert res["answers_identical"] and res["queries"] == 4 and set(res["results"]) == {"1", "2"}
    one, two = res["results"]["1"], res["results"]["2"]
    assert one["speedup"] == 1.0
    assert two["speedup"] == pytest.approx(two["queries_per_s"] / one["queries_per_s"], abs=0.01)
    assert 1 <= one["mean_text_tokens"] and one["mean_text_tokens"] == two["mean_text_tokens"]
