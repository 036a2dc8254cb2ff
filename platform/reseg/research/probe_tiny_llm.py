"""Can the tiny LLM of a config learn to read the question? A copy probe (docs/benchmarks.md).

When a tiny LISA's ``[SEG]`` states do not depend on the query (``tools/research/analyze_seg_states.py``
measures it), this probe asks the smallest question behind that: trained on LISA's conversation
(question templates, answer templates, the synthetic REFER *train* expressions), can the config's
tiny LLaVA learn to *repeat* the referring expression in its answer (``"Sure, it is blue star."``)?
It reports the teacher-forced accuracy of the first expression word after ``"Sure, it is"`` on the
validation expressions, with the image tokens of the conversation given as

* ``none``: no image tokens (a text-only LLM),
* ``noise``: as many image tokens as the config has, filled with Gaussian noise at the scale of the
  projected features at initialisation,
* ``real``: the images' projected features (vision tower as the config loads it, projector trained).

Only the LLM (and, for ``real``, the projector) trains; nothing is written unless ``--save``
(a whole tiny LLaVA state dict, loadable as ``model.lmm.tiny.checkpoint``).

    python tools/research/probe_tiny_llm.py --image-tokens none|noise|real [--steps 300] [--lr 1e-3] [--save F]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from reseg.research.tiny import clipped_step, expression, probe_setup, refer_splits


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/lisa/lisa_tiny_synthref.py")
    p.add_argument("--data", default="data/synthref")
    p.add_argument("--image-tokens", choices=("none", "noise", "real"), default="none")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8, help="images per step (up to 3 expressions each)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write the trained tiny LLaVA state dict here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from reseg.models.heads import templates as T
    from reseg.registry import LMMS

    full, rng = probe_setup(args.config, args.seed, "probe_tiny_llm")
    cfg = full.model.lmm.to_dict()
    cfg.update(trainable_modules="all", train_vision_tower=False, train_projector=args.image_tokens == "real",
               lora=None)
    lmm = LMMS.build(cfg)
    tok = lmm.tokenizer
    system = full.model.head.get("system_prompt", T.SYSTEM_PROMPT)
    image_str = tok.convert_ids_to_tokens(lmm.image_token_id)
    train, val = refer_splits(args.data, args.seed)
    n_prefix = len(tok(" Sure, it is", add_special_tokens=False).input_ids)
    noise_scale = float(lmm.image_features(lmm.preprocess_images([val[0].image])).norm(dim=-1).mean())

    def encode(text: str, training: bool) -> tuple[list[int], list[int]]:
        question = (rng.choice(T.SHORT_QUESTIONS) if training else T.VAL_SHORT).format(text=text.strip())
        answer = (rng.choice(T.ANSWERS) if training else "Sure, it is {seg}.").format(seg=expression(text))
        prompt = T.llava_v1_prompt(question, image_str, system)
        if args.image_tokens == "none":
            prompt = prompt.replace(image_str, "")
            ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False).input_ids
            ans = tok(" " + answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
            return ids + ans, [-100] * len(ids) + ans
        return lmm.encode(prompt, " " + answer)

    def forward(samples, training: bool):
        convs, image_of = [], []
        for i, s in enumerate(samples):
            for q in s.queries:
                convs.append(encode(q.text, training))
                image_of.append(i)
        batch = lmm.collate(convs)
        emb = lmm.model.get_input_embeddings()(batch["input_ids"])
        if args.image_tokens != "none":
            where = batch["input_ids"] == lmm.image_token_id
            if args.image_tokens == "real":
                feats = lmm.image_features(lmm.preprocess_images([s.image for s in samples]))
                feats = feats[torch.tensor(image_of, device=feats.device)].reshape(-1, emb.shape[-1])
            else:
                feats = torch.randn(int(where.sum()), emb.shape[-1], device=emb.device)
                feats = feats * noise_scale / emb.shape[-1] ** 0.5
            emb = emb.masked_scatter(where[..., None], feats.to(emb.dtype))
        hidden = lmm.model.model.language_model(inputs_embeds=emb, attention_mask=batch["attention_mask"],
                                                use_cache=False).last_hidden_state
        return lmm.model.lm_head(hidden)[:, :-1], batch["labels"][:, 1:]

    params = [p for p in lmm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    t0 = time.time()
    lmm.train()
    for step in range(args.steps):
        logits, labels = forward([train[rng.randrange(len(train))] for _ in range(args.batch)], True)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        clipped_step(loss, opt, sched, params)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}/{args.steps}  loss {loss.item():.4f}  {time.time() - t0:.0f}s", flush=True)
    lmm.eval()
    hits = total = 0
    with torch.no_grad():
        for i in range(min(args.val_images, len(val))):
            logits, labels = forward([val[i]], False)
            for row in range(labels.shape[0]):
                sup = (labels[row] != -100).nonzero()[:, 0]
                k = sup[n_prefix]  # the first expression word
                hits += int(logits[row, k].argmax() == labels[row, k])
                total += 1
    print(f"image tokens {args.image_tokens}: first-word accuracy {hits / total:.3f} on {total} validation "
          f"expressions after {args.steps} steps ({time.time() - t0:.0f}s)")
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        torch.save(lmm.model.state_dict(), args.save + ".tmp")
        os.replace(args.save + ".tmp", args.save)
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
