"""An offline tokenizer for the tiny scale.

No tokenizer can be downloaded here, so the tiny LLaVA uses a small LLaMA-style BPE (Metaspace
pre-tokenisation, ``<s>``/``</s>``/``<unk>``/``<pad>``, an ``<image>`` placeholder) trained with the
``tokenizers`` library on a fixed built-in corpus: the conversation templates of the built-in heads and
the vocabulary of referring/reasoning queries. Training is deterministic, takes well under a second
and the result is cached as a ``PreTrainedTokenizerFast`` directory (``tokenizer.json`` + config), so
the same ``from_pretrained`` code path loads it as loads a real LLaVA tokenizer.
"""
from __future__ import annotations

import contextlib
import os
import string

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)

_SENTENCES = """
A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful,
detailed, and polite answers to the human's questions. USER: ASSISTANT:
Can you segment the object in this image? Please segment the object in this image.
What is the object in this image? Please respond with segmentation mask. Please output segmentation mask.
What are the objects in this image? Please output segmentation masks.
It is. Sure, it is. Sure, the segmentation result is. Sure, the mask of it is. Sure, here it is.
Please output segmentation mask and explain why. Please output segmentation mask and explain the reason.
Please output segmentation mask and give some explanation. Sorry, there is no such object in the image.
I cannot find it in this image. There is no such object. The image does not show it.
red green blue yellow orange purple pink white black gray grey brown cyan magenta violet
circle circles square squares triangle triangles rectangle rectangles star stars ellipse ellipses
disc disk box diamond hexagon pentagon shape shapes object objects thing things one ones
big bigger biggest large larger largest small smaller smallest tiny huge medium little
left right top bottom middle center centre upper lower leftmost rightmost topmost bottommost
above below under over beside next near nearest far farthest between behind front of to the a an
first second third last other another all every each both any no none only same different
colour color coloured colored like looks look resembles similar as with without has have having
three four five six corners corner sides side edges edge round roll rolls could can would should
ripe banana sky grass fire blood snow coal sea ocean leaf leaves tomato lemon sun night cherry lime
which what who where why how is are was were be being been it its this that these those there here
most least more less many few several number count point points pointed pointy sharp flat curved
apple orange plum grape strawberry sunflower chocolate ash cloud clouds stop sign traffic light
find locate show highlight mark pick choose select identify segment segmentation mask masks
image picture photo scene background foreground area region part whole partly partially hidden
covered occluded visible and or but not if then so because since while when for from in on at by
keeps people dry keep warm used roll rolling stack stacked hold holds holding
"""


def _corpus() -> list[str]:
    words = set(_SENTENCES.split())
    lines = [line.strip() for line in _SENTENCES.strip().splitlines() if line.strip()]
    lines += sorted(words)
    lines += [w.capitalize() for w in sorted(words)]
    lines += list(string.ascii_letters + string.digits + string.punctuation)
    return lines


def build_tiny_tokenizer(save_dir: str | os.PathLike, vocab_size: int = 1024):
    """Train (or load, when cached) the tiny BPE tokenizer and return a ``PreTrainedTokenizerFast``.

    Args:
        save_dir: cache directory (a config's ``tokenizer_dir``: a relative path is under the reseg
            root, :mod:`reseg.paths`, never the current folder); created with ``tokenizer.json`` + config
            files on first use.
        vocab_size: BPE vocabulary size before special tokens are added by heads.
    """
    from transformers import PreTrainedTokenizerFast

    from reseg.paths import resolve_path

    save_dir = resolve_path(save_dir)
    if (save_dir / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(save_dir))

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation + "\u2581\n"),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=512,
    )
    save_dir.mkdir(parents=True, exist_ok=True)
    tmp = save_dir.with_name(save_dir.name + f".tmp{os.getpid()}")
    fast.save_pretrained(str(tmp))
    if not save_dir.exists() or not any(save_dir.iterdir()):
        with contextlib.suppress(OSError):  # another process filled save_dir first
            os.replace(tmp, save_dir)
    if tmp.exists():  # another process won the race, or save_dir existed: copy files in
        for f in tmp.iterdir():
            os.replace(f, save_dir / f.name)
        tmp.rmdir()
    return PreTrainedTokenizerFast.from_pretrained(str(save_dir))
