"""Synthetic VQA conversations (the tiny scale's stand-in for LLaVA-Instruct in LISA's mixture)."""
from __future__ import annotations

from reseg.datasets.synthref.vqa import SynthVQADataset, scene_questions


def test_scene_questions_are_answered_from_the_attributes_and_only_when_unambiguous():
    objs = [dict(colour="red", kind="circle", cx=10.0), dict(colour="blue", kind="circle", cx=50.0),
            dict(colour="red", kind="star", cx=30.0)]
    qa = dict(scene_questions(objs))
    assert qa["What colour is the star?"] == "It is red."
    assert "What colour is the circle?" not in qa  # two circles: ambiguous, not asked
    assert qa["What shape is the blue object?"] == "It is a circle."
    assert "What shape is the red object?" not in qa
    assert qa["How many shapes are there in this image?"] == "There are three."
    assert qa["Which shape is the leftmost?"] == "The red circle."
    assert qa["Which shape is the rightmost?"] == "The blue circle."


def test_vqa_samples_are_text_only_conversations(synth_root):
    ds = SynthVQADataset(synth_root / "refer_seg", split="train", num_queries_per_sample=2)
    s = ds[0]
    assert s.task == "vqa" and 1 <= len(s.queries) <= 2
    assert all(q.answer and q.masks.shape[0] == 0 for q in s.queries)


def test_lisa_head_keeps_vqa_questions_and_answers_without_mask_tokens(synth_root):
    from reseg_lisa.head import LISAHead

    head = LISAHead(rej_token="[REJ]", system_prompt="")
    head.image_token = "<image>"
    s = SynthVQADataset(synth_root / "refer_seg", split="train", num_queries_per_sample=1)[0]
    conv = head.build_conversations(s, "train")[0]
    assert s.queries[0].text in conv.prompt and "segment" not in conv.prompt.lower()
    assert conv.answer == " " + s.queries[0].answer and conv.slots == []  # no [SEG], no [REJ]
