"""The scene model of the synthetic benchmark: coloured shapes on a light background.

A :class:`Scene` is a list of :class:`SceneObject` in drawing order (later objects occlude earlier
ones), each with its kind, colour, size, position, full footprint and *visible* mask. Everything the
format writers and the language generators need is computed from it; nothing here knows any file
format. :func:`sample_scene` draws a scene from a ``numpy.random.Generator`` (deterministic for a
given generator state), :func:`render_scene` paints it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class ShapeKind:
    """A shape category: its name, how many corners a person would count, its COCO category id."""

    name: str
    corners: int
    category_id: int


#: The shape kinds, in category-id order.
KINDS: dict[str, ShapeKind] = {
    k.name: k
    for k in (
        ShapeKind("circle", 0, 1),
        ShapeKind("triangle", 3, 2),
        ShapeKind("square", 4, 3),
        ShapeKind("rectangle", 4, 4),
        ShapeKind("hexagon", 6, 5),
        ShapeKind("star", 10, 6),
    )
}

#: The colours (RGB), chosen to be easy to name and far apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 155, 55),
    "blue": (40, 80, 215),
    "yellow": (240, 210, 30),
    "orange": (245, 130, 20),
    "purple": (135, 55, 175),
}

_SUBPIXEL_SHIFT = 4  # cv2.fillPoly fixed-point bits: vertices are drawn with 1/16 px precision


@dataclass
class SceneConfig:
    """How scenes are drawn (sizes in pixels)."""

    min_objects: int = 2
    max_objects: int = 5
    width_range: tuple[int, int] = (128, 192)
    aspect_range: tuple[float, float] = (0.65, 1.35)  # height / width
    min_radius: float = 9.0
    max_radius_frac: float = 0.24  # of min(H, W)
    min_visible_fraction: float = 0.6
    min_visible_pixels: int = 80
    min_component_pixels: int = 30
    max_components: int = 2
    placement_attempts: int = 40
    colour_jitter: int = 12


@dataclass
class SceneObject:
    """One shape. ``vertices`` are ``[P, 2]`` float (x, y); masks are ``[H, W] bool``."""

    kind: str
    colour: str
    rgb: tuple[int, int, int]
    center: tuple[float, float]
    radius: float
    angle: float
    vertices: np.ndarray
    full_mask: np.ndarray
    visible_mask: np.ndarray | None = None

    @property
    def category_id(self) -> int:
        return KINDS[self.kind].category_id

    @property
    def corners(self) -> int:
        return KINDS[self.kind].corners

    def __setattr__(self, name: str, value) -> None:
        if name in ("full_mask", "visible_mask"):
            object.__setattr__(self, "_stats", None)  # masks changed: recompute areas, bbox, centroid
        object.__setattr__(self, name, value)

    def _measure(self) -> dict:
        stats = getattr(self, "_stats", None)
        if stats is None:
            m = self.visible_mask if self.visible_mask is not None else self.full_mask
            ys, xs = np.nonzero(m)
            stats = dict(
                full_area=int(self.full_mask.sum()),
                visible_area=len(xs),
                bbox=(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else (0, 0, -1, -1),
                centroid=(float(xs.mean()), float(ys.mean())) if len(xs) else (float("nan"), float("nan")),
            )
            object.__setattr__(self, "_stats", stats)
        return stats

    @property
    def full_area(self) -> int:
        return self._measure()["full_area"]

    @property
    def visible_area(self) -> int:
        return self._measure()["visible_area"]

    @property
    def visible_fraction(self) -> float:
        return self.visible_area / max(self.full_area, 1)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive ``(x0, y0, x1, y1)`` of the visible pixels."""
        return self._measure()["bbox"]

    @property
    def centroid(self) -> tuple[float, float]:
        """``(x, y)`` mean of the visible pixels."""
        return self._measure()["centroid"]


@dataclass
class Scene:
    """An image-to-be: size, background pixels, objects in drawing order, blurred regions."""

    width: int
    height: int
    background: np.ndarray  # [H, W, 3] uint8 RGB
    objects: list[SceneObject] = field(default_factory=list)
    blur_regions: list[np.ndarray] = field(default_factory=list)  # int32 [P, 2] polygons

    def update_visibility(self) -> None:
        """Visible mask of each object = its footprint minus everything drawn after it."""
        covered = np.zeros((self.height, self.width), dtype=bool)
        for obj in reversed(self.objects):
            obj.visible_mask = obj.full_mask & ~covered
            covered |= obj.full_mask

    def region_mask(self, polygon: np.ndarray) -> np.ndarray:
        """``[H, W] bool`` pixels of an integer polygon, filled as labelme/LISA fill it."""
        m = np.zeros((self.height, self.width), dtype=np.uint8)
        pts = np.asarray(polygon, dtype=np.int32).reshape(-1, 2)
        cv2.polylines(m, [pts], True, 1, 1)
        cv2.fillPoly(m, [pts], 1)
        return m.astype(bool)


# -- geometry ----------------------------------------------------------------------------------------


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return points @ np.array([[c, s], [-s, c]])


def shape_vertices(kind: str, radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """``[P, 2]`` float vertices of ``kind`` centred at the origin (image y axis points down)."""
    r = float(radius)
    if kind == "circle":
        t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * r
    elif kind == "square":
        h = 0.85 * r
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif kind == "rectangle":
        short = r * float(rng.uniform(0.4, 0.55))  # aspect >= 1.8: never mistaken for a square
        pts = np.array([[-r, -short], [r, -short], [r, short], [-r, short]])
        if rng.random() < 0.5:
            pts = pts[:, ::-1]
    elif kind == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * (1.1 * r)
        pts[:, 1] += 0.2 * r  # centre the bounding box
    elif kind == "hexagon":
        t = np.arange(6) * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * r
    elif kind == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.12 * r, 0.47 * r)
        pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], axis=1)
        pts[:, 1] += 0.1 * r
    else:
        raise ValueError(f"unknown shape kind {kind!r}; known: {sorted(KINDS)}")
    return _rotate(pts, angle)


def fill_polygon(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[H, W] bool`` of a float polygon, drawn with sub-pixel vertex precision."""
    m = np.zeros((height, width), dtype=np.uint8)
    fixed = np.round(np.asarray(vertices) * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)
    cv2.fillPoly(m, [fixed], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    return m.astype(bool)


def mask_components(mask: np.ndarray) -> tuple[int, list[int], bool]:
    """(number of components, their pixel counts, whether any has a hole) of a ``[H, W] bool`` mask."""
    m = mask.astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    sizes = [int(s) for s in stats[1:, cv2.CC_STAT_AREA]]
    _, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    has_hole = hierarchy is not None and bool((hierarchy[0][:, 3] != -1).any())
    return n - 1, sizes, has_hole


def mask_to_coco_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons (``[[x1, y1, ...], ...]``) whose pycocotools rasterisation equals ``mask``.

    The outline is traced on the mask upsampled 2x, so each polygon runs a quarter pixel outside the
    centres of the boundary pixels; pycocotools then includes exactly those pixels (a polygon through
    the pixel centres would lose about half of the boundary). Holes are not representable (COCO
    polygons cannot have them); the scene sampler rejects masks with holes.
    """
    m = np.asarray(mask, dtype=np.uint8)
    up = cv2.resize(m, (m.shape[1] * 2, m.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        # drop staircase vertices that lie within a quarter pixel of the outline (still exact)
        c = cv2.approxPolyDP(c, 0.5, True)
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if len(pts) >= 3:
            polys.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polys


def mask_to_pixel_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Integer ``[P, 2]`` outlines of each component; ``polylines`` + ``fillPoly`` of them gives ``mask``.

    This is the labelme convention that LISA's rasteriser expects (spec seg_token_family.md §5.1).
    """
    m = np.asarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.int32) for c in contours if len(c) >= 3]


# -- sampling ----------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = float(rng.uniform(205, 245))
    tint = rng.uniform(-8, 8, size=3)
    img = np.full((h, w, 3), base, dtype=np.float32) + tint.astype(np.float32)
    style = rng.choice(3)  # 0 plain, 1 light noise, 2 gentle gradient
    if style == 1:
        img += rng.normal(0.0, 4.0, size=(h, w, 1)).astype(np.float32)
    elif style == 2:
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (np.cos(a) * xx / w + np.sin(a) * yy / h).astype(np.float32)
        img += (ramp - ramp.mean())[..., None] * float(rng.uniform(15, 30))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _acceptable(scene: Scene, cfg: SceneConfig) -> bool:
    for obj in scene.objects:
        vis = obj.visible_mask
        if vis.sum() < cfg.min_visible_pixels or obj.visible_fraction < cfg.min_visible_fraction:
            return False
        n, sizes, hole = mask_components(vis)
        if hole or n > cfg.max_components or min(sizes) < cfg.min_component_pixels:
            return False
    return True


def _touches_same_colour(scene: Scene, new: SceneObject) -> bool:
    grown = cv2.dilate(new.full_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return any(o.colour == new.colour and (grown & o.full_mask).any() for o in scene.objects)


def sample_object(
    rng: np.random.Generator, h: int, w: int, cfg: SceneConfig, kind: str, colour: str
) -> SceneObject:
    """One object of ``kind``/``colour`` at a random size, angle and position fully inside the image."""
    r_max = max(cfg.min_radius + 1.0, cfg.max_radius_frac * min(h, w))
    radius = float(rng.uniform(cfg.min_radius, r_max))
    angle = float(rng.uniform(0.0, 60.0)) if kind == "hexagon" else float(rng.uniform(-15.0, 15.0))
    local = shape_vertices(kind, radius, angle, rng)
    lo, hi = local.min(axis=0), local.max(axis=0)
    cx = float(rng.uniform(1.0 - lo[0], w - 2.0 - hi[0]))
    cy = float(rng.uniform(1.0 - lo[1], h - 2.0 - hi[1]))
    verts = local + np.array([cx, cy])
    jitter = rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1, size=3)
    rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
    return SceneObject(kind=kind, colour=colour, rgb=rgb, center=(cx, cy), radius=radius, angle=angle,
                       vertices=verts, full_mask=fill_polygon(verts, h, w))


def sample_scene(rng: np.random.Generator, cfg: SceneConfig | None = None) -> Scene:
    """Draw a scene: size, background, 2-5 objects with bounded occlusion (see :class:`SceneConfig`).

    Every object's visible part is at least ``min_visible_fraction`` of it, has at most
    ``max_components`` sizeable pieces and no hole; objects of the same colour never touch (they would
    read as one blob).
    """
    cfg = cfg or SceneConfig()
    w = int(rng.integers(cfg.width_range[0], cfg.width_range[1] + 1))
    h = round(w * float(rng.uniform(*cfg.aspect_range)))
    scene = Scene(width=w, height=h, background=_background(rng, h, w))
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    kinds, colours = list(KINDS), list(COLOURS)
    for _ in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        colour = colours[int(rng.integers(len(colours)))]
        for _attempt in range(cfg.placement_attempts):
            obj = sample_object(rng, h, w, cfg, kind, colour)
            if _touches_same_colour(scene, obj):
                continue
            scene.objects.append(obj)
            scene.update_visibility()
            if _acceptable(scene, cfg):
                break
            scene.objects.pop()
        scene.update_visibility()
    if len(scene.objects) < cfg.min_objects:  # crowded by bad luck: draw again from the same stream
        return sample_scene(rng, cfg)
    return scene


def render_scene(scene: Scene) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB: background, objects in order, then the blurred regions."""
    img = scene.background.copy()
    for obj in scene.objects:
        img[obj.full_mask] = obj.rgb
    if scene.blur_regions:
        blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=3.0)
        for poly in scene.blur_regions:
            region = scene.region_mask(poly)
            img[region] = blurred[region]
    return img


def encode_jpeg(image_rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an ``[H, W, 3] uint8`` RGB image (deterministic for the same pixels)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
