"""Language for the synthetic benchmark: expressions about groups of objects, or about none.

* :func:`multi_target_candidates`: expressions with two or more targets ("all red shapes", "the two
  circles", "every shape left of the green square", "the red circle and the blue square");
* :func:`no_target_candidates`: expressions that fit nothing in the scene ("the purple star" when
  there is none, "the shape above the blue square" when every shape is clearly below it);
* :func:`false_premise_variant`: a true single-object expression altered so that it names an object
  that is not there ("the blue circle" for a red circle), FP-RefCOCO style;
* :func:`reference_candidates`: queries about a reference mask ("every shape the same colour as
  <mask_ref>"), MaskGroups style;
* :func:`describe_scene`: a caption of the whole scene.

As in :mod:`~reseg.datasets.synthref.language`, a phrase is kept only when its target set is certain:
group membership is exact, and relations must hold or fail clearly (``relation_holds`` is never
``None``) for every candidate.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from reseg.datasets.synthref.language import RefExpr, _noun, _pick, group, relation_holds, resolve
from reseg.datasets.synthref.scene import COLOURS, KINDS, Scene

#: The reference placeholder written into MaskGroups queries.
REF_TOKEN = "<mask_ref>"
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
RELATIONS = ("left", "right", "above", "below")
_REL_PHRASES = {
    "left": ("left of", "to the left of"),
    "right": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below", "under"),
}


@dataclass(frozen=True)
class GroupCandidate:
    """Phrasings of one target set: ``targets`` are sorted object indices (``()`` = no target)."""

    targets: tuple[int, ...]
    strategy: str
    texts: tuple[str, ...]


def plural(kind: str) -> str:
    return kind + "s"


def _counted(sg: str, pl: str, n: int) -> list[str]:
    texts = [f"all {pl}", f"all the {pl}", f"the {pl}", f"every {sg}"]
    if n == 2:
        texts += [f"both {pl}", f"the two {pl}"]
    elif n in NUMBER_WORDS:
        texts.append(f"the {NUMBER_WORDS[n]} {pl}")
    return texts


def _unique_name(scene: Scene, j: int) -> RefExpr | None:
    """The shortest attribute expression (colour / kind / both) that picks out object ``j`` alone."""
    o = scene.objects[j]
    for e in (RefExpr(o.colour, None), RefExpr(None, o.kind), RefExpr(o.colour, o.kind)):
        if resolve(e, scene) == j:
            return e
    return None


def _bases(scene: Scene, min_size: int = 2) -> list[tuple[str | None, str | None]]:
    """(colour, kind) groups to quantify over: everything, and each colour / kind with enough members."""
    out: list[tuple[str | None, str | None]] = [(None, None)]
    out += [(c, None) for c in COLOURS if len(group(scene, c, None)) >= min_size]
    out += [(None, k) for k in KINDS if len(group(scene, None, k)) >= min_size]
    return out


def _base_nouns(colour: str | None, kind: str | None) -> tuple[str, str]:
    if kind:
        return (f"{colour} {kind}" if colour else kind), plural(f"{colour} {kind}" if colour else kind)
    return (f"{colour} shape" if colour else "shape"), (f"{colour} shapes" if colour else "shapes")


def relation_outcome(scene: Scene, members: list[int], landmark: int, relation: str) -> tuple[int, ...] | None:
    """The members clearly ``relation`` of ``landmark``, or None if any member is unclear."""
    outcomes = [relation_holds(scene.objects[i], scene.objects[landmark], relation) for i in members]
    if any(o is None for o in outcomes):
        return None
    return tuple(i for i, o in zip(members, outcomes) if o)


def multi_target_candidates(scene: Scene, rng: np.random.Generator) -> list[GroupCandidate]:
    """Every expression family with two or more targets in ``scene`` (see the module docstring)."""
    out: list[GroupCandidate] = []
    n_obj = len(scene.objects)
    for c in COLOURS:
        g = group(scene, c, None)
        if len(g) >= 2:
            texts = _counted(f"{c} shape", f"{c} shapes", len(g)) + [f"all {c} objects", f"the {c} ones"]
            out.append(GroupCandidate(tuple(g), "colour", tuple(texts)))
    for k in KINDS:
        g = group(scene, None, k)
        if len(g) >= 2:
            out.append(GroupCandidate(tuple(g), "kind", tuple(_counted(k, plural(k), len(g)))))
            for c in COLOURS:
                gc = group(scene, c, k)
                if len(gc) >= 2:
                    texts = _counted(f"{c} {k}", plural(f"{c} {k}"), len(gc))
                    out.append(GroupCandidate(tuple(gc), "combo", tuple(texts)))
    if n_obj >= 2:
        out.append(GroupCandidate(tuple(range(n_obj)), "all", tuple(_counted("shape", "shapes", n_obj))))
    # relations to a uniquely named landmark
    for j in range(n_obj):
        lm = _unique_name(scene, j)
        if lm is None:
            continue
        lnoun = _noun(lm.colour, lm.kind, rng, allow_one=False)
        for colour, kind in _bases(scene):
            members = [i for i in group(scene, colour, kind) if i != j]
            sg, pl = _base_nouns(colour, kind)
            for rel in RELATIONS:
                hit = relation_outcome(scene, members, j, rel)
                if hit is None or len(hit) < 2:
                    continue
                texts = []
                for phrase in _REL_PHRASES[rel]:
                    texts += [f"every {sg} {phrase} the {lnoun}", f"all {pl} {phrase} the {lnoun}",
                              f"the {pl} {phrase} the {lnoun}"]
                out.append(GroupCandidate(hit, "relation", tuple(texts)))
    # two uniquely named objects
    names = {j: _unique_name(scene, j) for j in range(n_obj)}
    named = [j for j, e in names.items() if e is not None]
    for a in range(len(named)):
        for b in range(a + 1, len(named)):
            i, j = named[a], named[b]
            na = _noun(names[i].colour, names[i].kind, rng, allow_one=False)
            nb = _noun(names[j].colour, names[j].kind, rng, allow_one=False)
            out.append(GroupCandidate((i, j), "pair", (f"the {na} and the {nb}", f"the {nb} and the {na}")))
    return out


def no_target_candidates(scene: Scene, rng: np.random.Generator) -> list[GroupCandidate]:
    """Expressions that fit no object of ``scene``, by strategy:

    * ``absent_combo``: a colour and a kind that both occur, never together ("the purple star");
    * ``absent_colour`` / ``absent_kind``: a colour or kind that does not occur at all;
    * ``absent_relation``: a relation to a uniquely named landmark that every candidate clearly fails.
    """
    out: list[GroupCandidate] = []
    colours = {o.colour for o in scene.objects}
    kinds = {o.kind for o in scene.objects}
    for c in COLOURS:
        for k in KINDS:
            if c in colours and k in kinds and not group(scene, c, k):
                texts = (f"the {c} {k}", f"{c} {k}", f"the {c} {k} in the picture")
                out.append(GroupCandidate((), "absent_combo", texts))
    for c in COLOURS:
        if c not in colours:
            out.append(GroupCandidate((), "absent_colour", (f"the {c} shape", f"the {c} object", f"all {c} shapes")))
    for k in KINDS:
        if k not in kinds:
            out.append(GroupCandidate((), "absent_kind", (f"the {k}", f"every {k}", f"the {k} in the image")))
    for j in range(len(scene.objects)):
        lm = _unique_name(scene, j)
        if lm is None:
            continue
        lnoun = _noun(lm.colour, lm.kind, rng, allow_one=False)
        members = [i for i in range(len(scene.objects)) if i != j]
        for rel in RELATIONS:
            hit = relation_outcome(scene, members, j, rel)
            if hit is not None and not hit:
                phrase = _pick(rng, _REL_PHRASES[rel])
                out.append(GroupCandidate((), "absent_relation",
                                          (f"the shape {phrase} the {lnoun}", f"every shape {phrase} the {lnoun}")))
    return out


def choose_texts(cand: GroupCandidate, rng: np.random.Generator, max_texts: int) -> list[str]:
    """1 to ``max_texts`` distinct phrasings of ``cand`` (30% one, 40% two, 30% three, capped)."""
    k = min(int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])), max_texts, len(cand.texts))
    return [cand.texts[i] for i in sorted(rng.choice(len(cand.texts), size=k, replace=False))]


def pick_by_strategy(cands: list[GroupCandidate], rng: np.random.Generator,
                     weights: dict[str, float] | None = None) -> GroupCandidate | None:
    """A candidate: first a strategy (uniform, or by ``weights`` over those present), then uniformly."""
    strategies = sorted({c.strategy for c in cands})
    if not strategies:
        return None
    p = np.array([1.0 if weights is None else weights.get(s, 0.0) for s in strategies], dtype=np.float64)
    if p.sum() <= 0:
        p = np.ones(len(strategies))
    s = strategies[int(rng.choice(len(strategies), p=p / p.sum()))]
    pool = [c for c in cands if c.strategy == s]
    return pool[int(rng.integers(len(pool)))]


# -- false premises ----------------------------------------------------------------------------------


def false_premise_variant(expr: RefExpr, scene: Scene, rng: np.random.Generator) -> RefExpr | None:
    """``expr`` with one attribute changed so that it names an object that is not in ``scene``.

    The colour or kind of the described object (or of its landmark) is swapped for one such that no
    object has the altered attributes; an expression without colour and kind ("the leftmost shape")
    gains an absent colour. Returns None when no alteration empties the group.
    """
    options: list[RefExpr] = []
    if expr.colour:
        options += [replace(expr, colour=c) for c in COLOURS if c != expr.colour and not group(scene, c, expr.kind)]
    if expr.kind:
        options += [replace(expr, kind=k) for k in KINDS if k != expr.kind and not group(scene, expr.colour, k)]
    if not expr.colour and not expr.kind:
        options += [replace(expr, colour=c) for c in COLOURS if not group(scene, c, None)]
    lm = expr.landmark
    if lm is not None:
        if lm.colour:
            options += [replace(expr, landmark=replace(lm, colour=c)) for c in COLOURS
                        if c != lm.colour and not group(scene, c, lm.kind)]
        if lm.kind:
            options += [replace(expr, landmark=replace(lm, kind=k)) for k in KINDS
                        if k != lm.kind and not group(scene, lm.colour, k)]
    if not options:
        return None
    return options[int(rng.integers(len(options)))]


# -- reference-mask queries --------------------------------------------------------------------------


def reference_candidates(scene: Scene, ref: int) -> list[GroupCandidate]:
    """Queries about object ``ref`` given as a mask (``<mask_ref>`` in the text); targets may be empty."""
    o = scene.objects[ref]
    R = REF_TOKEN
    out: list[GroupCandidate] = []
    same_colour = tuple(group(scene, o.colour, None))
    same_kind = tuple(group(scene, None, o.kind))
    out.append(GroupCandidate(same_colour, "ref_colour", (
        f"every shape the same colour as {R}", f"all shapes with the same colour as {R}",
        f"the shapes coloured like {R}")))
    out.append(GroupCandidate(tuple(i for i in same_colour if i != ref), "ref_colour_other", (
        f"every other shape with the same colour as {R}", f"the other shapes coloured like {R}")))
    out.append(GroupCandidate(same_kind, "ref_kind", (
        f"every shape of the same kind as {R}", f"all shapes shaped like {R}")))
    out.append(GroupCandidate(tuple(i for i in same_kind if i != ref), "ref_kind_other", (
        f"every other shape shaped like {R}", f"the other shapes of the same kind as {R}")))
    for colour, kind in _bases(scene, min_size=1):
        members = [i for i in group(scene, colour, kind) if i != ref]
        if not members:
            continue
        sg, pl = _base_nouns(colour, kind)
        for rel in RELATIONS:
            hit = relation_outcome(scene, members, ref, rel)
            if hit is None:
                continue
            texts = []
            for phrase in _REL_PHRASES[rel]:
                texts += [f"every {sg} {phrase} {R}", f"all {pl} {phrase} {R}"]
            out.append(GroupCandidate(hit, "ref_relation", tuple(texts)))
    return out


# -- captions ----------------------------------------------------------------------------------------


def _where(scene: Scene, j: int) -> str:
    x, y = scene.objects[j].centroid
    col = "left" if x < scene.width / 3 else "right" if x > 2 * scene.width / 3 else ""
    row = "top" if y < scene.height / 3 else "bottom" if y > 2 * scene.height / 3 else ""
    if row and col:
        return f"at the {row} {col}"
    if row or col:
        return f"at the {row or col}"
    return "in the middle"


def describe_scene(scene: Scene, rng: np.random.Generator) -> str:
    """A caption: how many shapes, then each one with its size, colour, kind and place."""
    n = len(scene.objects)
    area = scene.width * scene.height
    parts = []
    for j in rng.permutation(n):
        o = scene.objects[int(j)]
        frac = o.visible_area / area
        size = "big " if frac > 0.06 else "small " if frac < 0.02 else ""
        art = "an" if (size or o.colour)[0] in "aeiou" else "a"
        parts.append(f"{art} {size}{o.colour} {o.kind} {_where(scene, int(j))}")
    count = NUMBER_WORDS.get(n, str(n)).capitalize()
    lead = _pick(rng, [f"{count} shapes on a light background: ", f"A picture of {n} shapes: ",
                       f"{count} coloured shapes: "])
    return lead + ", ".join(parts[:-1]) + (" and " if n > 1 else "") + parts[-1] + "."
