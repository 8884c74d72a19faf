"""Pointing game on full-resolution maps (TorchRay's definition), center baseline and the
evaluate command (its table, JSON, overlays and the recommendation it writes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gradcam_kit import cli
from gradcam_kit.data.datasets import ImageDataset
from gradcam_kit.data.preprocess import build_transform
from gradcam_kit.data.synthetic import write_image_folder
from gradcam_kit.metrics.localization import (
    center_baseline,
    point_hits,
    pointing_game,
    scaled_tolerance,
)
from gradcam_kit.models.checkpoint import save_checkpoint
from resnet50 import ResNet50FineTuned


def _mask(size: int, rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def test_hit_within_tolerance_of_the_mask():
    mask = _mask(64, slice(10, 14), slice(40, 44))  # rows 10-13, cols 40-43
    heatmaps = torch.zeros(3, 64, 64)
    heatmaps[0, 12, 42] = 1.0  # inside
    heatmaps[1, 12, 49] = 1.0  # 6 px right of column 43
    heatmaps[2, 30, 42] = 1.0  # 17 px below row 13
    hits = pointing_game(heatmaps, mask.expand(3, 64, 64), tolerance_px=6)
    assert hits.tolist() == [True, True, False]
    assert pointing_game(heatmaps, mask.expand(3, 64, 64), tolerance_px=5.9).tolist() == [True, False, False]


def test_tolerance_scales_with_resolution():
    assert scaled_tolerance(15, 224) == 15 and scaled_tolerance(15, (112, 128)) == pytest.approx(7.5)
    mask = _mask(112, slice(0, 2), slice(0, 2))
    heatmap = torch.zeros(1, 112, 112)
    heatmap[0, 1, 9] = 1.0  # 8 px from the mask: a hit at 15 px, a miss at 15 * 112 / 224 = 7.5 px
    assert pointing_game(heatmap, mask[None]).item()
    assert not pointing_game(heatmap, mask[None], reference_size=224).item()


def test_matches_torchray_style_reference():
    """TorchRay dilates the mask by a disc of the tolerance and reads it at the map's maximum."""
    cv2 = pytest.importorskip("cv2")
    generator = torch.Generator().manual_seed(0)
    heatmaps = torch.rand(32, 40, 40, generator=generator)
    masks = torch.rand(32, 40, 40, generator=generator) > 0.995
    masks[0] = False  # an empty mask is never hit
    tolerance = 5
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    expected = []
    for heatmap, mask in zip(heatmaps.numpy(), masks.numpy()):
        dilated = cv2.dilate(mask.astype(np.uint8), disc) > 0
        expected.append(bool(dilated[np.unravel_index(heatmap.argmax(), heatmap.shape)]))
    assert pointing_game(heatmaps, masks, tolerance_px=tolerance).tolist() == expected
    assert pointing_game(heatmaps, masks, tolerance_px=tolerance, mode="torchray").tolist() == expected
    assert sum(expected) > 5  # the comparison is not vacuous


def test_center_baseline():
    centred = _mask(32, slice(14, 18), slice(14, 18))
    corner = _mask(32, slice(0, 3), slice(0, 3))
    assert center_baseline(torch.stack([centred, corner]), tolerance_px=3).tolist() == [True, False]
    assert point_hits(torch.tensor([[1, 1]]), corner[None], 0).tolist() == [True]


def test_bad_input():
    with pytest.raises(ValueError, match="one mask per heatmap"):
        pointing_game(torch.zeros(2, 8, 8), torch.zeros(3, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode must be one of"):
        pointing_game(torch.zeros(2, 8, 8), torch.zeros(2, 32, 32, dtype=torch.bool), mode="argmax")
    with pytest.raises(ValueError, match="alignment must be one of"):
        pointing_game(torch.zeros(2, 8, 8), torch.zeros(2, 32, 32, dtype=torch.bool), alignment="corner")
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        pointing_game(torch.zeros(8, 8), torch.zeros(8, 8, dtype=torch.bool))


def test_evaluate_command_all_layers_in_one_table(tmp_path, capsys):
    data = tmp_path / "data"
    write_image_folder(data, {"test": 6}, size=32, seed=0, progress=False)
    torch.manual_seed(0)
    model = ResNet50FineTuned(2, weights=None, freeze_features=False).eval()
    checkpoint = save_checkpoint(
        tmp_path / "run" / "best.pt", model, num_classes=2, class_names=["normal", "opacity"],
        input_size=[32, 32], mean=[0.5] * 3, std=[0.25] * 3, target_layer="layer4.2.conv3",
    )
    layers = ["layer1", "layer2", "layer3", "layer4", "layer4.2.conv3"]
    code = cli.main([
        "evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--no-progress",
        "--batch-size", "4", "--overlays", "2", "--json", str(tmp_path / "eval.json"),
        "--method", "gradcam", "layercam",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "center baseline" in printed and all(layer in printed for layer in layers)
    result = json.loads((tmp_path / "eval.json").read_text())
    assert list(result["pointing_game"]) == ["gradcam", "layercam"]
    assert all(list(table) == layers for table in result["pointing_game"].values())
    best = result["best"]
    assert best["accuracy"] == max(r["accuracy"] for t in result["pointing_game"].values() for r in t.values())
    assert result["positives_with_masks"] == 3 and result["images"] == 6
    assert result["tolerance_px"] == pytest.approx(15 * 32 / 224)
    assert len(list((tmp_path / "run" / "overlays").glob("*.png"))) == 2

    # the same figures, recomputed layer by layer with the model's own Grad-CAM
    dataset = ImageDataset.from_source(
        data, "test", transform=build_transform(32, mean=[0.5] * 3, std=[0.25] * 3), mask_size=(32, 32)
    )
    images = torch.stack([dataset[i][0] for i in range(6)])
    masks = torch.stack([dataset[i][2] for i in range(6)])
    labels = dataset.labels
    model.enable_gradcam_mode()
    for method in ("gradcam", "layercam"):
        for layer in layers:
            _, raw = model(
                images, return_gradcam=True, gradcam_class_idx=labels, gradcam_layers=layer,
                gradcam_method=method, gradcam_raw=True,
            )
            hits = pointing_game(raw, masks, tolerance_px=15 * 32 / 224)[masks.flatten(1).any(1)]
            assert result["pointing_game"][method][layer]["hits"] == int(hits.sum()), (method, layer)
    centre = center_baseline(masks, 15 * 32 / 224)[masks.flatten(1).any(1)]
    assert result["center_baseline"]["hits"] == int(centre.sum())
    with torch.no_grad():
        logits = model(images)
    assert result["classification"]["accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_single_logit_head_from_a_csv(tmp_path):
    from gradcam_kit.metrics.pointing import evaluate_pointing

    data = tmp_path / "data"
    write_image_folder(data, {"test": 4}, size=32, seed=1, progress=False)
    torch.manual_seed(0)
    model = ResNet50FineTuned(1, weights=None, freeze_features=False).eval()
    dataset = ImageDataset.from_source(data / "test.csv", transform=build_transform(32), mask_size=(32, 32))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    result = evaluate_pointing(model, loader, layers=["layer1"], progress=False)
    assert result["positives_with_masks"] == 2 and result["classification"]["count"] == 4
    images, _, masks = next(iter(loader))
    model.enable_gradcam_mode()
    # a single logit: the positive class 1 (the logit itself) is explained
    _, raw = model(images, return_gradcam=True, gradcam_class_idx=1, gradcam_layers="layer1", gradcam_raw=True)
    hits = pointing_game(raw, masks, tolerance_px=15 * 32 / 224)[masks.flatten(1).any(1)]
    assert result["pointing_game"]["gradcam"]["layer1"]["hits"] == int(hits.sum())
    assert not model.training
