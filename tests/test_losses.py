"""Mask losses (specs/seg_token_family.md §1.3), checked against values worked out by hand."""
import math

import pytest
import torch

from reseg.models.losses import dice_loss, mask_losses, sigmoid_bce_loss

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_bce_is_the_mean_over_pixels_of_each_mask():
    # sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4, so the four pixel losses are
    # -ln(1/2), -ln(3/4), -ln(1 - 3/4), -ln(1 - 1/2) = ln2, ln(4/3), ln4, ln2.
    logits = torch.tensor([[[0.0, LN3], [LN3, 0.0]]])
    targets = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    expected = (LN2 + (2 * LN2 - LN3) + 2 * LN2 + LN2) / 4
    assert sigmoid_bce_loss(logits, targets).tolist() == pytest.approx([expected])


def test_bce_accepts_flat_masks_and_bool_targets_and_sums_on_request():
    logits = torch.zeros(2, 4)  # every pixel costs ln 2 whatever its target
    targets = torch.tensor([[True, False, True, False], [False] * 4])
    assert sigmoid_bce_loss(logits, targets).tolist() == pytest.approx([LN2, LN2])
    assert sigmoid_bce_loss(logits, targets, reduction="sum").item() == pytest.approx(2 * LN2)


def test_dice_matches_the_hand_formula_with_1e_3_smoothing():
    # p = 1/2 on 4 pixels, one target pixel: sum(p t) = 1/2, sum p = 2, sum t = 1.
    logits = torch.zeros(1, 2, 2)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    expected = 1 - (2 * 0.5 + 1e-3) / (2 + 1 + 1e-3)
    assert dice_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_dice_scale_only_sets_the_effective_smoothing():
    logits = torch.tensor([[[0.3, -1.2], [2.0, 0.1]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    lisa = dice_loss(logits, targets, scale=1000, eps=1e-6)
    unscaled = dice_loss(logits, targets, scale=1, eps=1e-3)
    assert lisa.item() == pytest.approx(unscaled.item(), rel=1e-6)


def test_dice_of_an_empty_target():
    targets = torch.zeros(1, 2, 2)
    # Predicted empty (p = 0): (0 + 1e-3) / (0 + 1e-3) -> loss 0.
    assert dice_loss(torch.full((1, 2, 2), -float("inf")), targets).item() == pytest.approx(0.0)
    # p = 1/2 everywhere: 1 - 1e-3 / (2 + 1e-3), almost 1.
    expected = 1 - 1e-3 / (2 + 1e-3)
    assert dice_loss(torch.zeros(1, 2, 2), targets).item() == pytest.approx(expected, rel=1e-6)


def test_mask_losses_average_over_all_masks_of_the_batch():
    # Image A (2x2) has two masks, image B (3x1) one: N = 3.
    # All logits are 0, so every BCE_k is ln 2 and Dice_k = 1 - (sum t + 1e-3)/(P/2 + sum t + 1e-3).
    a_targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    b_targets = torch.tensor([[[1.0], [1.0], [0.0]]])
    dice_a1 = 1 - (1 + 1e-3) / (2 + 1 + 1e-3)
    dice_a2 = 1 - (4 + 1e-3) / (2 + 4 + 1e-3)
    dice_b1 = 1 - (2 + 1e-3) / (1.5 + 2 + 1e-3)
    out = mask_losses(
        [torch.zeros(2, 2, 2), torch.zeros(1, 3, 1)], [a_targets, b_targets],
        bce_weight=2.0, dice_weight=0.5,
    )
    assert out["loss_mask_bce"].item() == pytest.approx(2.0 * LN2, rel=1e-6)
    mean_over_masks = (dice_a1 + dice_a2 + dice_b1) / 3
    assert out["loss_mask_dice"].item() == pytest.approx(0.5 * mean_over_masks, rel=1e-6)
    # ... which is not the mean of the per-image means.
    mean_of_image_means = ((dice_a1 + dice_a2) / 2 + dice_b1) / 2
    assert abs(mean_over_masks - mean_of_image_means) > 1e-2


def test_mask_losses_skip_images_without_masks_in_the_count():
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    one = mask_losses([torch.zeros(1, 2, 2)], [targets], bce_weight=1.0, dice_weight=1.0)
    with_empty = mask_losses(
        [torch.zeros(1, 2, 2), torch.zeros(0, 5, 7)],
        [targets, torch.zeros(0, 5, 7, dtype=torch.bool)],
        bce_weight=1.0, dice_weight=1.0,
    )
    for key in ("loss_mask_bce", "loss_mask_dice"):
        assert with_empty[key].item() == pytest.approx(one[key].item())


def test_mask_losses_without_masks_are_zero_and_keep_the_graph():
    logits = torch.zeros(0, 4, 4, requires_grad=True)
    out = mask_losses([logits], [torch.zeros(0, 4, 4, dtype=torch.bool)])
    assert out["loss_mask_bce"].item() == 0.0 and out["loss_mask_dice"].item() == 0.0
    assert out["loss_mask_bce"].requires_grad and out["loss_mask_dice"].requires_grad
    (out["loss_mask_bce"] + out["loss_mask_dice"]).backward()
    assert logits.grad is not None


def test_mask_losses_without_images_are_zero():
    out = mask_losses([], [])
    assert out["loss_mask_bce"].item() == 0.0 and out["loss_mask_dice"].item() == 0.0


def test_mask_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="image 0"):
        mask_losses([torch.zeros(2, 4, 4)], [torch.zeros(1, 4, 4)])


def test_losses_are_computed_in_float32_for_half_inputs():
    logits = torch.zeros(1, 2, 2, dtype=torch.bfloat16)
    assert sigmoid_bce_loss(logits, torch.ones(1, 2, 2)).dtype == torch.float32
