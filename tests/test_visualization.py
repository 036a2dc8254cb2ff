"""The overlay PNGs of the visualisation hook, tools/test.py --show-dir and tools/infer.py."""
import numpy as np

from reseg.engine.visualization import HALO_COLOR, PRED_COLOR, blend, overlay_panel


def _red_square_scene():
    img = np.full((32, 32, 3), 230, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    img[mask] = PRED_COLOR  # an object of exactly the prediction's colour
    return img, mask


def test_a_mask_on_an_object_of_its_own_colour_still_shows_its_outline():
    img, mask = _red_square_scene()
    out = blend(img, mask, PRED_COLOR)
    changed = (out != img).any(axis=-1)
    # the tint and the 1 px outline alone leave this object unchanged; the halo marks its edge, both sides
    assert changed[mask].sum() > 0 and changed[~mask].sum() > 0
    edge_row = out[16]
    assert tuple(edge_row[8]) == tuple(PRED_COLOR)  # the outline itself, on the contour
    assert tuple(edge_row[7]) == HALO_COLOR and tuple(edge_row[9]) == HALO_COLOR  # the halo either side
    assert tuple(out[16, 16]) == tuple(PRED_COLOR)  # the inside is tinted, not darkened
    assert np.array_equal(blend(img, np.zeros_like(mask), PRED_COLOR), img)  # no mask, no change


def test_the_prediction_panel_differs_from_the_image_panel_for_a_same_coloured_object():
    img, mask = _red_square_scene()
    panel = overlay_panel(img, None, mask, "the red square", min_height=32, show_gt=False)
    left, right = panel[:32, :32], panel[:32, 36:68]
    assert np.array_equal(left, img)
    assert (right != img).any(axis=-1).sum() >= 4 * 16  # the outlined edge of the square


def _caption_rows(panel: np.ndarray, image_height: int) -> int:
    """How many rows of the caption band below the panels hold text (dark pixels)."""
    band = panel[image_height:]
    return int((band.min(axis=(1, 2)) < 100).sum())


def test_the_caption_scales_with_a_large_photo():
    """A 4000 x 3000 photo's caption takes the same share of the panel height as a 400 x 300 one's."""
    shares = []
    for h, w in ((300, 400), (3000, 4000)):
        img = np.full((h, w, 3), 200, np.uint8)
        pred = np.zeros((h, w), bool)
        pred[h // 4: h // 2, w // 4: w // 2] = True
        panel = overlay_panel(img, None, pred, "the red square on the left", "exists: True", show_gt=False)
        assert panel.shape[1] == 2 * w + 4
        shares.append(_caption_rows(panel, h) / h)
    small, large = shares
    assert small > 0.05 and 0.5 * small < large < 2 * small, shares  # it was 10x smaller at 3000 px
