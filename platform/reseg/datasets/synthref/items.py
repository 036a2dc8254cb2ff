"""One image of each split family of the synthetic benchmark, as a pure function of the config and
``(split, index)``: scene, JPEG bytes and the records the writers of :mod:`.writers` need.

Every image comes from its own ``numpy`` generator seeded by ``(seed, family, split, index)``
(:func:`item_rng`), so a split's images do not depend on the other splits' counts nor on the number
of workers. :mod:`.generator` calls these functions and hands their results to the writers.

* :func:`make_refer_item` (REFER / RefCOCO): up to ``max_refs_per_image`` objects, each with up to
  ``max_sentences_per_ref`` unambiguous referring expressions (:mod:`.language`).
* :func:`make_reason_item` (ReasonSeg): one reasoning rule's target ("the shape coloured like a ripe
  banana"), short or long query, sometimes an ignore region over another object.
* :func:`make_gref_item` (gRefCOCO, spec seg_token_family.md §5.3): single-target refs, multi-target
  refs ("all red shapes", "the two circles", "every shape left of the green square", "the red circle
  and the blue square") and, with probability ``gref_no_target_prob``, a no-target ref
  (``ann_id [-1]``: "the purple star" when there is none).
* :func:`make_fp_item` (FP-RefCOCO, spec §5.4): refs whose sentences are true (``is_false_premise``
  False) or, with probability ``fp_prob`` per true sentence, its false-premise twin: the same
  expression with one attribute changed so that it names an object that is not there; ``gt_sent`` is
  the true sentence.
* :func:`make_maskgroups_item` (MaskGroups, anchorseg_ras.md §2.3): an imperfect candidate pool
  (:mod:`.candidate_pools`), the GT pool (every object's visible mask, in object order) and several
  records: text-only queries (single, multi and no-target) and, with probability
  ``mg_reference_prob``, queries about a reference mask ("every shape the same colour as
  <mask_ref>", mask in ``ref_mask``). Reference queries with an empty target group are kept with
  probability ``mg_reference_empty_prob`` (else a non-empty one is drawn when the scene has one).
  Each record also has a scene ``caption``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from reseg.datasets.io import encode_rle
from reseg.datasets.synthref.candidate_pools import candidate_pool
from reseg.datasets.synthref.group_language import (
    GroupCandidate,
    choose_texts,
    describe_scene,
    false_premise_variant,
    multi_target_candidates,
    no_target_candidates,
    pick_by_strategy,
    reference_candidates,
)
from reseg.datasets.synthref.language import (
    REASON_FAMILIES,
    ReasonRule,
    candidate_rules,
    choose_sentences,
    describe,
    raw_variant,
    resolve,
    rule_target,
    rule_texts,
    tokenize,
)
from reseg.datasets.synthref.scene import (
    Scene,
    encode_jpeg,
    mask_to_coco_polygons,
    mask_to_pixel_polygons,
    render_scene,
    sample_scene,
)
from reseg.datasets.synthref.writers import labelme_record

if TYPE_CHECKING:  # pragma: no cover
    from reseg.datasets.synthref.generator import SynthRefConfig

#: Seed component per family of splits (append new families; never renumber: it changes the data).
FAMILY_CODE = {"refer": 1, "reason": 2, "grefer": 3, "fprefer": 4, "maskgroups": 5}
#: Seed component (and image-id prefix) per split name.
SPLIT_CODE = {"train": 1, "val": 2, "testA": 3, "testB": 4, "test": 5, "validation": 6}
#: Image ids are ``split_code * IMAGE_ID_STRIDE + index + 1`` (stable when other splits change size).
IMAGE_ID_STRIDE = 1_000_000


def item_rng(seed: int, family: str, split: str, index: int) -> np.random.Generator:
    """The generator of one image: seeded by ``(seed, family, split, index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), FAMILY_CODE[family],
                                                         SPLIT_CODE[split], int(index)]))


def refer_image_id(split: str, index: int) -> int:
    return SPLIT_CODE[split] * IMAGE_ID_STRIDE + int(index) + 1


@dataclass
class ReferItem:
    """One REFER-layout image: COCO image record, JPEG bytes, every object's annotation, the refs."""

    image: dict[str, Any]
    jpeg: bytes
    annotations: list[dict[str, Any]]
    refs: list[dict[str, Any]]


def coco_annotation(scene: Scene, k: int, ann_id: int, image_id: int) -> dict[str, Any]:
    """The COCO annotation of object ``k`` (visible part as polygons, plus its ``synth`` attributes)."""
    obj = scene.objects[k]
    x0, y0, x1, y1 = obj.bbox
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=obj.category_id,
        segmentation=mask_to_coco_polygons(obj.visible_mask),
        area=float(obj.visible_area),
        bbox=[float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
        iscrowd=0,
        synth=dict(colour=obj.colour, kind=obj.kind, z=k, full_area=obj.full_area,
                   visible_fraction=round(obj.visible_fraction, 4)),
    )


# -- REFER items ---------------------------------------------------------------------------------------


def make_refer_item(cfg: SynthRefConfig, split: str, index: int) -> ReferItem:
    """Scene, image, annotations and refs of REFER image ``index`` of ``split`` (pure function)."""
    rng = item_rng(cfg.seed, "refer", split, index)
    while True:
        scene = sample_scene(rng, cfg.scene)
        chosen = {k: choose_sentences(scene, k, rng, cfg.max_sentences_per_ref)
                  for k in range(len(scene.objects))}
        referable = [k for k, s in chosen.items() if s]
        if referable:
            break
    order = [referable[i] for i in rng.permutation(len(referable))][: cfg.max_refs_per_image]
    image_id = refer_image_id(split, index)
    file_name = f"{cfg.dataset_name}_{image_id:08d}.jpg"
    anns = [coco_annotation(scene, k, image_id * 10 + k, image_id) for k in range(len(scene.objects))]
    refs = []
    for k in sorted(order):
        ann_id = image_id * 10 + k
        sentences = [_sentence(text, ann_id * 10 + j, rng) for j, (text, _) in enumerate(chosen[k])]
        refs.append(_ref(ann_id, file_name, image_id, split, sentences, scene.objects[k].category_id,
                         synth_strategies=[expr.strategy for _, expr in chosen[k]]))
    jpeg = encode_jpeg(render_scene(scene), cfg.jpeg_quality)
    image = dict(id=image_id, file_name=file_name, height=scene.height, width=scene.width)
    return ReferItem(image=image, jpeg=jpeg, annotations=anns, refs=refs)


# -- ReasonSeg items -----------------------------------------------------------------------------------


@dataclass
class ReasonItem:
    """One ReasonSeg image: name, JPEG bytes and its labelme-style JSON record."""

    split: str
    name: str
    jpeg: bytes
    record: dict[str, Any]


def _ignore_region(scene: Scene, target: int, rng: np.random.Generator) -> np.ndarray | None:
    """An int ``[4, 2]`` box over part of a non-target object (or background), away from the target."""
    h, w = scene.height, scene.width
    keep_out = cv2.dilate(scene.objects[target].visible_mask.astype(np.uint8),
                          np.ones((7, 7), np.uint8)).astype(bool)
    others = [k for k in range(len(scene.objects)) if k != target]
    for _ in range(20):
        if others and rng.random() < 0.8:
            x0, y0, x1, y1 = scene.objects[others[int(rng.integers(len(others)))]].bbox
            bw, bh = max(6, int((x1 - x0) * rng.uniform(0.5, 0.9))), max(6, int((y1 - y0) * rng.uniform(0.5, 0.9)))
            bx = int(rng.integers(max(0, x0 - bw // 3), max(1, min(w - bw, x1 - bw // 2))))
            by = int(rng.integers(max(0, y0 - bh // 3), max(1, min(h - bh, y1 - bh // 2))))
        else:
            bw, bh = int(rng.integers(12, max(13, w // 4))), int(rng.integers(12, max(13, h // 4)))
            bx, by = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        bx1, by1 = min(w - 1, bx + bw), min(h - 1, by + bh)
        poly = np.array([[bx, by], [bx1, by], [bx1, by1], [bx, by1]], dtype=np.int32)
        if not (scene.region_mask(poly) & keep_out).any():
            return poly
    return None


def _choose_rule(cfg: SynthRefConfig, rng: np.random.Generator) -> tuple[Scene, ReasonRule]:
    fams = list(REASON_FAMILIES)
    p = np.array([cfg.reason_family_weights.get(f, 0.0) for f in fams], dtype=np.float64)
    family = fams[int(rng.choice(len(fams), p=p / p.sum()))]
    fallback: tuple[Scene, ReasonRule] | None = None
    for _ in range(30):
        scene = sample_scene(rng, cfg.scene)
        rules = candidate_rules(scene)
        if not rules:
            continue
        wanted = [r for r in rules if r.family == family]
        if wanted:
            return scene, wanted[int(rng.integers(len(wanted)))]
        if fallback is None:
            fallback = (scene, rules[int(rng.integers(len(rules)))])
    if fallback is None:
        raise RuntimeError("could not draw a scene with a reasoning rule in 30 tries")
    return fallback


def make_reason_item(cfg: SynthRefConfig, split: str, index: int) -> ReasonItem:
    """Scene, image and labelme JSON of ReasonSeg image ``index`` of ``split`` (pure function)."""
    rng = item_rng(cfg.seed, "reason", split, index)
    scene, rule = _choose_rule(cfg, rng)
    target = rule_target(rule, scene)
    is_sentence = bool(rng.random() < cfg.long_query_prob)
    n_texts = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    texts = rule_texts(rule, rng, long=is_sentence, n=n_texts)
    shapes = [("target", poly.tolist()) for poly in mask_to_pixel_polygons(scene.objects[target].visible_mask)]
    ignore = _ignore_region(scene, target, rng) if rng.random() < cfg.ignore_prob else None
    if ignore is not None:
        scene.blur_regions.append(ignore)
        shapes.append(("ignore", ignore.tolist()))
    name = f"synth_{split}_{index:05d}"
    t = scene.objects[target]
    record = labelme_record(name, scene.height, scene.width, texts, is_sentence, shapes,
                            extra=dict(rule=rule.name, family=rule.family, target_colour=t.colour,
                                       target_kind=t.kind, num_objects=len(scene.objects)))
    return ReasonItem(split=split, name=name, jpeg=encode_jpeg(render_scene(scene), cfg.jpeg_quality),
                      record=record)


#: How often each kind of no-target expression is drawn (among those the scene allows).
NO_TARGET_WEIGHTS = {"absent_combo": 0.45, "absent_colour": 0.2, "absent_kind": 0.2, "absent_relation": 0.15}
#: How often each kind of multi-target expression is drawn (among those the scene allows).
MULTI_TARGET_WEIGHTS = {"colour": 1.0, "kind": 1.0, "combo": 1.0, "relation": 1.5, "pair": 1.0, "all": 0.3}
#: How often each kind of reference query is drawn (among those the scene allows).
REFERENCE_WEIGHTS = {"ref_colour": 0.25, "ref_colour_other": 0.1, "ref_kind": 0.2, "ref_kind_other": 0.1,
                     "ref_relation": 0.35}


def _sentence(text: str, sent_id: int, rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    tokens = tokenize(text)
    return dict(tokens=tokens, raw=raw_variant(text, rng), sent_id=sent_id, sent=" ".join(tokens), **extra)


def _ref(ann_id: int, file_name: str, image_id: int, split: str, sentences: list[dict[str, Any]],
         category_id: int, **extra: Any) -> dict[str, Any]:
    """One REFER ref record (the key layout of refer's ``refs(unc).p``); ``ref_id`` is ``ann_id``."""
    return dict(sent_ids=[s["sent_id"] for s in sentences], file_name=f"{file_name[:-4]}_{ann_id}.jpg",
                ann_id=ann_id, ref_id=ann_id, image_id=image_id, split=split, sentences=sentences,
                category_id=category_id, **extra)


def _single_candidates(scene: Scene, rng: np.random.Generator, limit: int, max_sentences: int
                       ) -> list[GroupCandidate]:
    out = []
    for k in rng.permutation(len(scene.objects)):
        if len(out) >= limit:
            break
        chosen = choose_sentences(scene, int(k), rng, max_sentences)
        if chosen:
            out.append(GroupCandidate((int(k),), "single", tuple(t for t, _ in chosen)))
    return out


def _pick_distinct(cands: list[GroupCandidate], n: int, rng: np.random.Generator,
                   weights: dict[str, float] | None = None) -> list[GroupCandidate]:
    """Up to ``n`` candidates with different target sets (strategy first, then uniformly)."""
    out: list[GroupCandidate] = []
    left = list(cands)
    while left and len(out) < n:
        c = pick_by_strategy(left, rng, weights)
        out.append(c)
        left = [d for d in left if d.targets != c.targets]
    return out


# -- gRefCOCO ----------------------------------------------------------------------------------------


def make_gref_item(cfg: SynthRefConfig, split: str, index: int) -> ReferItem:
    """Scene, image, annotations and gRefCOCO refs of image ``index`` of ``split`` (pure function)."""
    rng = item_rng(cfg.seed, "grefer", split, index)
    while True:
        scene = sample_scene(rng, cfg.scene)
        chosen = _single_candidates(scene, rng, int(rng.integers(1, cfg.gref_max_single_refs + 1)),
                                    cfg.max_sentences_per_ref)
        n_multi = int(rng.integers(1, cfg.gref_max_multi_refs + 1))
        chosen += _pick_distinct(multi_target_candidates(scene, rng), n_multi, rng, MULTI_TARGET_WEIGHTS)
        if chosen:
            break
    if rng.random() < cfg.gref_no_target_prob:
        none = pick_by_strategy(no_target_candidates(scene, rng), rng, NO_TARGET_WEIGHTS)
        if none is not None:
            chosen.append(none)
    image_id = refer_image_id(split, index)
    file_name = f"{cfg.gref_dataset_name}_{image_id:08d}.jpg"
    anns = [coco_annotation(scene, k, image_id * 10 + k, image_id) for k in range(len(scene.objects))]
    refs, seen = [], set()
    for r, cand in enumerate(chosen):
        ref_id = image_id * 10 + r
        texts = [t for t in choose_texts(cand, rng, cfg.max_sentences_per_ref) if t not in seen]
        if not texts:
            continue
        seen.update(texts)
        sentences = [_sentence(t, ref_id * 10 + j, rng) for j, t in enumerate(texts)]
        targets = list(cand.targets)
        refs.append(dict(
            ref_id=ref_id,
            image_id=image_id,
            split=split,
            file_name=file_name,
            ann_id=[image_id * 10 + k for k in targets] if targets else [-1],
            category_id=[scene.objects[k].category_id for k in targets] if targets else [-1],
            sent_ids=[s["sent_id"] for s in sentences],
            sentences=sentences,
            synth_strategy=cand.strategy,
        ))
    jpeg = encode_jpeg(render_scene(scene), cfg.jpeg_quality)
    image = dict(id=image_id, file_name=file_name, height=scene.height, width=scene.width)
    return ReferItem(image=image, jpeg=jpeg, annotations=anns, refs=refs)


# -- FP-RefCOCO ----------------------------------------------------------------------------------------


def make_fp_item(cfg: SynthRefConfig, split: str, index: int) -> ReferItem:
    """Scene, image, annotations and FP-RefCOCO refs of image ``index`` of ``split`` (pure function)."""
    rng = item_rng(cfg.seed, "fprefer", split, index)
    while True:
        scene = sample_scene(rng, cfg.scene)
        chosen = {k: choose_sentences(scene, k, rng, cfg.max_sentences_per_ref) for k in range(len(scene.objects))}
        referable = [k for k, s in chosen.items() if s]
        if referable:
            break
    order = sorted(referable[i] for i in rng.permutation(len(referable))[: cfg.max_refs_per_image])
    image_id = refer_image_id(split, index)
    file_name = f"{cfg.fp_dataset_name}_{image_id:08d}.jpg"
    anns = [coco_annotation(scene, k, image_id * 10 + k, image_id) for k in range(len(scene.objects))]
    seen = {text for k in order for text, _ in chosen[k]}
    refs = []
    for k in order:
        ann_id = image_id * 10 + k
        sentences = []
        for text, expr in chosen[k]:
            true = " ".join(tokenize(text))
            sentences.append(_sentence(text, ann_id * 10 + len(sentences), rng,
                                       is_false_premise=False, gt_sent=true))
            if rng.random() >= cfg.fp_prob:
                continue
            fp = false_premise_variant(expr, scene, rng)
            if fp is None:
                continue
            fp_text = describe(fp, scene, rng)
            if fp_text in seen or resolve(fp, scene) is not None:
                continue
            seen.add(fp_text)
            sentences.append(_sentence(fp_text, ann_id * 10 + len(sentences), rng,
                                       is_false_premise=True, gt_sent=true))
        refs.append(_ref(ann_id, file_name, image_id, split, sentences, scene.objects[k].category_id))
    jpeg = encode_jpeg(render_scene(scene), cfg.jpeg_quality)
    image = dict(id=image_id, file_name=file_name, height=scene.height, width=scene.width)
    return ReferItem(image=image, jpeg=jpeg, annotations=anns, refs=refs)


# -- MaskGroups ----------------------------------------------------------------------------------------


class MaskGroupsItem:
    """One MaskGroups image: split, file name, JPEG bytes and its records."""

    __slots__ = ("file_name", "jpeg", "records", "split")

    def __init__(self, split: str, file_name: str, jpeg: bytes, records: list[dict[str, Any]]) -> None:
        self.split, self.file_name, self.jpeg, self.records = split, file_name, jpeg, records


def _mg_query(scene: Scene, rng: np.random.Generator, cfg: SynthRefConfig
              ) -> tuple[GroupCandidate | None, int | None]:
    """A query's target candidate and its reference object (None for text-only queries)."""
    u = rng.random()
    if u < cfg.mg_reference_prob:
        ref = int(rng.integers(len(scene.objects)))
        cands = reference_candidates(scene, ref)
        if rng.random() >= cfg.mg_reference_empty_prob:
            cands = [c for c in cands if c.targets] or cands
        return pick_by_strategy(cands, rng, REFERENCE_WEIGHTS), ref
    if u < cfg.mg_reference_prob + cfg.mg_no_target_prob:
        return pick_by_strategy(no_target_candidates(scene, rng), rng, NO_TARGET_WEIGHTS), None
    if rng.random() < 0.6:
        return pick_by_strategy(multi_target_candidates(scene, rng), rng, MULTI_TARGET_WEIGHTS), None
    singles = _single_candidates(scene, rng, 1, 3)
    return (singles[0] if singles else None), None


def make_maskgroups_item(cfg: SynthRefConfig, split: str, index: int) -> MaskGroupsItem:
    """Scene, image, candidate pool and MaskGroups records of image ``index`` of ``split`` (pure function)."""
    rng = item_rng(cfg.seed, "maskgroups", split, index)
    scene = sample_scene(rng, cfg.scene)
    pool, how = candidate_pool(scene, rng, cfg.pool)
    pool_rles = [encode_rle(m) for m in pool]
    gt_rles = [encode_rle(o.visible_mask) for o in scene.objects]
    caption = describe_scene(scene, rng)
    name = f"{cfg.mg_dataset_name}_{split}_{index:05d}"
    file_name = f"{name}.jpg"
    lo, hi = cfg.mg_queries_per_image
    wanted = int(rng.integers(lo, hi + 1))
    records, seen = [], set()
    for _ in range(4 * wanted):
        if len(records) >= wanted:
            break
        cand, ref = _mg_query(scene, rng, cfg)
        if cand is None:
            continue
        key = (cand.strategy, cand.targets, ref)  # one phrasing per meaning and image
        if key in seen:
            continue
        seen.add(key)
        text = cand.texts[int(rng.integers(len(cand.texts)))]
        record: dict[str, Any] = {
            "id": f"{name}_{len(records)}",
            "image": file_name,
            "conversations": [
                {"from": "human", "value": f"<image>\n<mask_pool>\n{text[:1].upper()}{text[1:]}"},
                {"from": "gpt", "value": "Here are the matching masks."},
            ],
            "mask_pool": pool_rles,
            "gt_mask_pool": gt_rles,
            "gt_mask_group": [list(cand.targets)],
        }
        if ref is not None:
            record["ref_mask"] = [gt_rles[ref]]
        record["caption"] = caption
        record["synth"] = {"strategy": cand.strategy, "ref_object": ref, "pool_sources": how}
        records.append(record)
    return MaskGroupsItem(split, file_name, encode_jpeg(render_scene(scene), cfg.jpeg_quality), records)
