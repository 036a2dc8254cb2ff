"""Language for the synthetic benchmark: referring expressions and reasoning queries about a scene.

Referring expressions are built as structured :class:`RefExpr` objects and kept only when
:func:`resolve` says they pick out exactly the intended object *with a clear margin* (sizes differ by
a large factor, positions by several pixels, relations hold for the target and clearly fail for every
other candidate). Only then are they turned into text, so every sentence is unambiguous.

Reasoning queries (ReasonSeg style) name the target through a rule the model has to apply: a
colour by a familiar object ("coloured like a ripe banana"), a shape by a property ("could roll",
"three corners"), a superlative ("the most corners") or a combination.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reseg.datasets.synthref.scene import Scene, SceneObject

#: Size comparisons need this ratio of full areas and of visible areas.
SIZE_RATIO_FULL = 1.7
SIZE_RATIO_VISIBLE = 1.3
#: Extremes ("leftmost") need this margin to the runner-up, as a fraction of the image side (min 6 px).
POSITION_MARGIN_FRAC = 0.06

#: "a left of b" also needs |dx| >= RELATION_CONE * |dy| (mirror images alike): within 45 degrees of
#: the axis, so a diagonal neighbour is "above", not "left of".
RELATION_CONE = 1.0

STRATEGIES = ("attribute", "size", "position", "relation")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


@dataclass(frozen=True)
class RefExpr:
    """A structured referring expression.

    ``colour``/``kind`` restrict the candidates (the *group*); at most one of ``size`` ('big' |
    'small'), ``extreme`` ('left' | 'right' | 'top' | 'bottom') or ``relation`` ('left' | 'right' |
    'above' | 'below', with an attribute-only ``landmark``) then selects one of them.
    """

    colour: str | None = None
    kind: str | None = None
    size: str | None = None
    extreme: str | None = None
    relation: str | None = None
    landmark: RefExpr | None = None

    @property
    def strategy(self) -> str:
        if self.size:
            return "size"
        if self.extreme:
            return "position"
        if self.relation:
            return "relation"
        return "attribute"


def group(scene: Scene, colour: str | None, kind: str | None) -> list[int]:
    """Indices of the objects matching ``colour`` and ``kind`` (None matches anything)."""
    return [
        i for i, o in enumerate(scene.objects)
        if (colour is None or o.colour == colour) and (kind is None or o.kind == kind)
    ]


def _clear_max(values: list[float], margin: float) -> int | None:
    """Position in ``values`` of the maximum if it beats the runner-up by ``margin``, else None."""
    order = np.argsort(values)[::-1]
    if len(values) < 2 or values[order[0]] - values[order[1]] < margin:
        return None
    return int(order[0])


def _clear_ratio_max(full: list[float], visible: list[float]) -> int | None:
    order = np.argsort(full)[::-1]
    if len(full) < 2:
        return None
    a, b = int(order[0]), int(order[1])
    if full[a] < SIZE_RATIO_FULL * full[b]:
        return None
    if any(visible[a] < SIZE_RATIO_VISIBLE * visible[j] for j in range(len(full)) if j != a):
        return None
    return a


def largest_index(objs: Sequence[SceneObject]) -> int | None:
    """Index of the clearly largest object (full and visible area), or None."""
    return _clear_ratio_max([o.full_area for o in objs], [o.visible_area for o in objs])


def smallest_index(objs: Sequence[SceneObject]) -> int | None:
    """Index of the clearly smallest object (full and visible area), or None."""
    return _clear_ratio_max([1.0 / o.full_area for o in objs], [1.0 / o.visible_area for o in objs])


def relation_holds(a: SceneObject, b: SceneObject, relation: str) -> bool | None:
    """Whether ``a`` is ``relation`` of ``b``: True (clearly), False (clearly not) or None (unclear).

    "left of": ``a``'s centroid is left of ``b``'s left edge and mostly sideways from ``b``'s centroid
    (``|dx| >= RELATION_CONE * |dy|``); clearly not when it is right of ``b``'s centroid. The other
    relations are the mirror images (image y points down).
    """
    ax, ay = a.centroid
    bx, by = b.centroid
    x0, y0, x1, y1 = b.bbox
    dx, dy = abs(ax - bx), abs(ay - by)
    if relation == "left":
        yes, no, along = ax < x0, ax >= bx, dx >= RELATION_CONE * dy
    elif relation == "right":
        yes, no, along = ax > x1, ax <= bx, dx >= RELATION_CONE * dy
    elif relation == "above":
        yes, no, along = ay < y0, ay >= by, dy >= RELATION_CONE * dx
    elif relation == "below":
        yes, no, along = ay > y1, ay <= by, dy >= RELATION_CONE * dx
    else:
        raise ValueError(f"unknown relation {relation!r}")
    if no:
        return False
    return True if (yes and along) else None


def resolve(expr: RefExpr, scene: Scene) -> int | None:
    """The one object ``expr`` clearly refers to in ``scene``, or None (none, several, or unclear)."""
    cands = group(scene, expr.colour, expr.kind)
    objs = scene.objects
    if expr.size:
        if len(cands) < 2:
            return None
        members = [objs[i] for i in cands]
        k = largest_index(members) if expr.size == "big" else smallest_index(members)
        return None if k is None else cands[k]
    if expr.extreme:
        if len(cands) < 2:
            return None
        axis = 0 if expr.extreme in ("left", "right") else 1
        sign = -1.0 if expr.extreme in ("left", "top") else 1.0
        side = scene.width if axis == 0 else scene.height
        margin = max(6.0, POSITION_MARGIN_FRAC * side)
        k = _clear_max([sign * objs[i].centroid[axis] for i in cands], margin)
        return None if k is None else cands[k]
    if expr.relation:
        if expr.landmark is None:
            return None
        lm = resolve(expr.landmark, scene)
        if lm is None:
            return None
        cands = [i for i in cands if i != lm]
        if not cands:
            return None
        outcomes = [relation_holds(objs[i], objs[lm], expr.relation) for i in cands]
        if any(o is None for o in outcomes) or sum(bool(o) for o in outcomes) != 1:
            return None
        return cands[outcomes.index(True)]
    return cands[0] if len(cands) == 1 else None


# -- text ---------------------------------------------------------------------------------------------


def _noun(colour: str | None, kind: str | None, rng: np.random.Generator, allow_one: bool = True) -> str:
    if colour and kind:
        return f"{colour} {kind}"
    if kind:
        return kind
    if colour:
        return _pick(rng, [f"{colour} shape", f"{colour} object"] + ([f"{colour} one"] if allow_one else []))
    return _pick(rng, ["shape", "object"])


def describe(expr: RefExpr, scene: Scene, rng: np.random.Generator) -> str:
    """Text of ``expr`` (lower case, no punctuation), e.g. "the big red circle"."""
    noun = _noun(expr.colour, expr.kind, rng)
    n = len(group(scene, expr.colour, expr.kind))
    if expr.size:
        if expr.size == "big":
            adj = _pick(rng, ["big", "bigger", "large", "larger"] if n == 2 else ["biggest", "largest"])
        else:
            adj = _pick(rng, ["small", "smaller", "little"] if n == 2 else ["smallest", "tiniest"])
        if expr.colour and expr.kind:
            return f"the {adj} {expr.colour} {expr.kind}"
        return f"the {adj} {noun}"
    if expr.extreme:
        two = n == 2
        options = {
            "left": [f"the {noun} on the left", f"the left {noun}", f"the leftmost {noun}"] if two
            else [f"the leftmost {noun}", f"the {noun} furthest to the left"],
            "right": [f"the {noun} on the right", f"the right {noun}", f"the rightmost {noun}"] if two
            else [f"the rightmost {noun}", f"the {noun} furthest to the right"],
            "top": [f"the {noun} at the top", f"the upper {noun}", f"the top {noun}"] if two
            else [f"the topmost {noun}", f"the highest {noun}", f"the {noun} at the top"],
            "bottom": [f"the {noun} at the bottom", f"the lower {noun}", f"the bottom {noun}"] if two
            else [f"the lowest {noun}", f"the bottommost {noun}", f"the {noun} at the bottom"],
        }[expr.extreme]
        return _pick(rng, options)
    if expr.relation:
        lm = expr.landmark
        lnoun = _noun(lm.colour, lm.kind, rng, allow_one=False)
        options = {
            "left": [f"the {noun} left of the {lnoun}", f"the {noun} to the left of the {lnoun}"],
            "right": [f"the {noun} right of the {lnoun}", f"the {noun} to the right of the {lnoun}"],
            "above": [f"the {noun} above the {lnoun}"],
            "below": [f"the {noun} below the {lnoun}", f"the {noun} under the {lnoun}"],
        }[expr.relation]
        return _pick(rng, options)
    if expr.colour and not expr.kind:
        return f"the {noun}"
    return _pick(rng, [f"the {noun}", noun]) if expr.colour and expr.kind else f"the {noun}"


def tokenize(text: str) -> list[str]:
    """REFER-style tokens: lower-case words (letters and digits)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def raw_variant(sent: str, rng: np.random.Generator) -> str:
    """A 'typed' form of a sentence for REFER's ``raw`` field (capitalised / with a full stop)."""
    raw = sent
    if rng.random() < 0.5:
        raw = raw[:1].upper() + raw[1:]
    if rng.random() < 0.3:
        raw += "."
    return raw


def _attribute_exprs(obj: SceneObject) -> list[RefExpr]:
    return [RefExpr(obj.colour, obj.kind), RefExpr(obj.colour, None), RefExpr(None, obj.kind)]


def referring_exprs(scene: Scene, target: int) -> list[RefExpr]:
    """Every candidate expression that :func:`resolve` maps to exactly ``target``."""
    o = scene.objects[target]
    bases = [(o.colour, o.kind), (None, o.kind), (o.colour, None), (None, None)]
    cands: list[RefExpr] = list(_attribute_exprs(o))
    for c, k in bases:
        for s in ("big", "small"):
            cands.append(RefExpr(c, k, size=s))
        for e in ("left", "right", "top", "bottom"):
            cands.append(RefExpr(c, k, extreme=e))
    landmarks = []
    for j, other in enumerate(scene.objects):
        if j == target:
            continue
        for lm in _attribute_exprs(other):
            if resolve(lm, scene) == j:
                landmarks.append(lm)
                break
    for c, k in bases:
        if len(group(scene, c, k)) < 2:  # the base alone is unique: a relation would be redundant
            continue
        for lm in landmarks:
            for rel in ("left", "right", "above", "below"):
                cands.append(RefExpr(c, k, relation=rel, landmark=lm))
    return [e for e in cands if resolve(e, scene) == target]


def choose_sentences(
    scene: Scene, target: int, rng: np.random.Generator, max_sentences: int = 3
) -> list[tuple[str, RefExpr]]:
    """1 to ``max_sentences`` distinct (text, expr) pairs for ``target``, from different strategies first."""
    exprs = referring_exprs(scene, target)
    if not exprs:
        return []
    by_strategy: dict[str, list[RefExpr]] = {}
    for e in exprs:
        by_strategy.setdefault(e.strategy, []).append(e)
    k = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    k = min(k, max_sentences)
    strategies = [s for s in STRATEGIES if s in by_strategy]
    order = [strategies[i] for i in rng.permutation(len(strategies))]
    out: list[tuple[str, RefExpr]] = []
    seen: set[str] = set()
    for attempt in range(4 * k):
        if len(out) >= k:
            break
        strat = order[attempt % len(order)]
        pool = by_strategy[strat]
        e = pool[int(rng.integers(len(pool)))]
        text = describe(e, scene, rng)
        if text not in seen:
            seen.add(text)
            out.append((text, e))
    return out


# -- reasoning queries ----------------------------------------------------------------------------

#: Everyday things of each colour ("coloured like ...").
COLOUR_REFERENTS: dict[str, list[str]] = {
    "yellow": ["a ripe banana", "a lemon", "the sun in a child's drawing"],
    "red": ["a ripe tomato", "a fire truck", "a strawberry"],
    "green": ["fresh grass", "a frog", "a lime"],
    "blue": ["a clear summer sky", "the deep ocean", "a blueberry"],
    "orange": ["a carrot", "a pumpkin", "a tangerine"],
    "purple": ["a bunch of grapes", "an eggplant", "lavender flowers"],
}

#: Per shape kind: noun phrases without the article, and long questions.
SHAPE_PHRASES: dict[str, tuple[list[str], list[str]]] = {
    "circle": (
        ["shape that could roll", "shape with no corners at all", "shape that looks like a coin"],
        ["If the picture were tilted, which shape would roll away first because it has no corners?",
         "Which of these shapes could be used as a wheel because it rolls smoothly?",
         "Point out the shape that is perfectly round, like a coin or a wheel."],
    ),
    "triangle": (
        ["shape with three corners", "shape with exactly three sides", "shape you could build from three sticks"],
        ["Which shape has the fewest straight sides that a closed shape can have?",
         "Find the shape that looks like a warning road sign with three corners.",
         "Which shape could you build from just three sticks laid end to end?"],
    ),
    "square": (
        ["shape with four equal sides", "shape that looks like a chessboard tile"],
        ["Which shape has four corners and four sides that are all the same length?",
         "Find the shape that looks like a single tile of a chessboard."],
    ),
    "rectangle": (
        ["shape shaped like a brick", "stretched shape with four corners", "shape shaped like a door"],
        ["Which shape has four corners but two sides much longer than the other two, like a door?",
         "Find the shape that looks like a brick from a wall."],
    ),
    "hexagon": (
        ["shape of a honeycomb cell", "shape with six sides"],
        ["Bees build their honeycomb from cells of one particular shape. Which shape in the image is it?",
         "Which shape has exactly six straight sides?"],
    ),
    "star": (
        ["shape that twinkles in the night sky", "shape with five pointed tips"],
        ["Which shape would you draw to show something twinkling in the night sky?",
         "Find the shape with five sharp points sticking out."],
    ),
}

SUPERLATIVE_PHRASES: dict[str, tuple[list[str], list[str]]] = {
    "most_corners": (
        ["the shape with the most corners", "the one with the most corners"],
        ["Count the corners of every shape: which one has the most?",
         "Which shape has more corners than any other shape in the picture?"],
    ),
    "largest": (
        ["the biggest shape", "the shape that takes up the most space"],
        ["Which shape would need the most paint to colour it in completely?",
         "If every shape were a slice of cake, which one would feed the most people?"],
    ),
    "smallest": (
        ["the tiniest shape", "the shape that takes up the least space"],
        ["Which shape would need the least paint to colour it in completely?",
         "If every shape were a cookie, which one would leave you the hungriest?"],
    ),
}

REASON_FAMILIES = ("colour", "shape", "combo", "superlative")


@dataclass(frozen=True)
class ReasonRule:
    """A reasoning query's rule: ``family`` plus its ``colour`` / ``kind`` / ``superlative``."""

    family: str
    colour: str | None = None
    kind: str | None = None
    superlative: str | None = None

    @property
    def name(self) -> str:
        parts = [self.family] + [p for p in (self.kind, self.colour, self.superlative) if p]
        return ":".join(parts)


def rule_target(rule: ReasonRule, scene: Scene) -> int | None:
    """The one object ``rule`` selects in ``scene``, or None."""
    objs = scene.objects
    if rule.family in ("colour", "shape", "combo"):
        g = group(scene, rule.colour, rule.kind)
        return g[0] if len(g) == 1 else None
    if rule.superlative == "most_corners":
        kinds = {o.kind for o in objs}
        if {"star", "hexagon"} <= kinds:  # star tips (5) vs star corners (10): keep it unambiguous
            return None
        best = max(o.corners for o in objs)
        winners = [i for i, o in enumerate(objs) if o.corners == best]
        return winners[0] if len(winners) == 1 else None
    if rule.superlative == "largest":
        return largest_index(objs)
    if rule.superlative == "smallest":
        return smallest_index(objs)
    raise ValueError(f"unknown rule {rule}")


def candidate_rules(scene: Scene) -> list[ReasonRule]:
    """Every rule that selects exactly one object of ``scene``."""
    rules: list[ReasonRule] = []
    for o in scene.objects:
        rules += [ReasonRule("colour", colour=o.colour), ReasonRule("shape", kind=o.kind),
                  ReasonRule("combo", colour=o.colour, kind=o.kind)]
    rules += [ReasonRule("superlative", superlative=s) for s in SUPERLATIVE_PHRASES]
    out, seen = [], set()
    for r in rules:
        if r in seen:
            continue
        seen.add(r)
        if rule_target(r, scene) is None:
            continue
        if r.family == "combo" and (rule_target(ReasonRule("colour", colour=r.colour), scene) is not None
                                    or rule_target(ReasonRule("shape", kind=r.kind), scene) is not None):
            continue  # a combination only when neither part alone decides
        out.append(r)
    return out


def rule_texts(rule: ReasonRule, rng: np.random.Generator, long: bool, n: int) -> list[str]:
    """``n`` distinct phrasings (fewer if the templates run out) of ``rule``, long or short."""
    def one() -> str:
        if rule.family == "colour":
            x = _pick(rng, COLOUR_REFERENTS[rule.colour])
            if long:
                return _pick(rng, [f"Which shape in this picture has the same colour as {x}?",
                                   f"If you were looking for something the colour of {x}, which shape would you pick?",
                                   f"Find the shape whose colour reminds you of {x}."])
            return _pick(rng, [f"the object coloured like {x}", f"the shape with the colour of {x}",
                               f"the thing that is the colour of {x}"])
        if rule.family == "shape":
            short, longs = SHAPE_PHRASES[rule.kind]
            return _pick(rng, longs) if long else "the " + _pick(rng, short)
        if rule.family == "combo":
            x = _pick(rng, COLOUR_REFERENTS[rule.colour])
            frag = _pick(rng, SHAPE_PHRASES[rule.kind][0])
            if long:
                return _pick(rng, [f"Among all the shapes, find the {frag} whose colour matches {x}.",
                                   f"Which {frag} here has the colour of {x}?",
                                   f"Look for the {frag} that is the same colour as {x}."])
            return _pick(rng, [f"the {frag} coloured like {x}", f"the {frag} that has the colour of {x}"])
        short, longs = SUPERLATIVE_PHRASES[rule.superlative]
        return _pick(rng, longs if long else short)

    out: list[str] = []
    for _ in range(6 * n):
        t = one()
        if t not in out:
            out.append(t)
        if len(out) == n:
            break
    return out
