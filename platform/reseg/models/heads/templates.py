"""The conversation templates of the `[SEG]` family: LISA's question and answer lists (seg_token_family.md §1.6, §1.8).

READ and AnchorSeg train and validate with exactly these (their official code copies LISA's).
"""
from __future__ import annotations

#: ``llava_v1`` system prompt (spec §1.6).
SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions."
)

#: Short questions (class names and referring phrases), spec §1.6.
SHORT_QUESTIONS = (
    "Can you segment the {text} in this image?",
    "Please segment the {text} in this image.",
    "What is {text} in this image? Please respond with segmentation mask.",
    "What is {text} in this image? Please output segmentation mask.",
)

#: Long questions (ReasonSeg ``is_sentence=True``), spec §1.6.
LONG_QUESTIONS = (
    "{text} Please respond with segmentation mask.",
    "{text} Please output segmentation mask.",
)

#: Answers; ``{seg}`` is the mask token (or several, joined), spec §1.6.
ANSWERS = (
    "It is {seg}.",
    "Sure, {seg}.",
    "Sure, it is {seg}.",
    "Sure, the segmentation result is {seg}.",
    "{seg}.",
)

#: Teacher-forced validation prompts and answer (spec §1.8; note LISA's leading space).
VAL_LONG = " {text} Please output segmentation mask."
VAL_SHORT = " What is {text} in this image? Please output segmentation mask."
VAL_ANSWER = "{seg}."


def llava_v1_prompt(question: str, image_token: str = "<image>", system: str = SYSTEM_PROMPT) -> str:
    """``system USER: <image>\\n{question} ASSISTANT:`` (``SeparatorStyle.TWO``, spec §1.6)."""
    head = f"{system} " if system else ""
    return f"{head}USER: {image_token}\n{question} ASSISTANT:"


def join_tokens(tokens: list[str]) -> str:
    """``[SEG]``, ``[SEG] and [SEG]``, ``[SEG], [SEG] and [SEG]`` for several targets."""
    if len(tokens) <= 1:
        return "".join(tokens)
    return ", ".join(tokens[:-1]) + " and " + tokens[-1]
