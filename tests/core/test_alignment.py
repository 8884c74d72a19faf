"""Receptive-field alignment of upsampled maps (the model's default; "pixel" matches OpenCV/torch)."""

from __future__ import annotations

import pytest
import torch

from gradcam_kit.core.engine import upsample

SIZE = 64  # the side of conftest's images


def _one_hot(h: int, w: int, row: int, col: int) -> torch.Tensor:
    maps = torch.zeros(1, h, w)
    maps[0, row, col] = 1.0
    return maps


@pytest.mark.parametrize(("row", "col"), [(0, 0), (3, 2), (6, 6), (2, 5)])
def test_unit_lands_on_its_receptive_field_centre(row, col):
    stride = 32
    aligned = upsample(_one_hot(7, 7, row, col), (224, 224), alignment="receptive-field")
    peak = divmod(int(aligned[0].argmax()), 224)
    assert peak == (stride * row, stride * col)
    assert float(aligned[0, stride * row, stride * col]) == pytest.approx(1.0)


def test_default_resize_is_shifted_by_half_a_stride():
    # The usual half-pixel resize puts unit 3 between pixels 111 and 112 (= 32 * 3 + 15.5).
    pixel = upsample(_one_hot(7, 7, 3, 3), (224, 224))
    top = pixel[0].max()
    rows, cols = torch.nonzero(pixel[0] == top, as_tuple=True)
    assert sorted(set(rows.tolist())) == [111, 112] and sorted(set(cols.tolist())) == [111, 112]


def test_same_size_is_identity_and_values_stay_in_range():
    maps = torch.rand(2, 5, 6)
    assert torch.equal(upsample(maps, (5, 6), alignment="receptive-field"), maps)
    up = upsample(maps, (40, 48), alignment="receptive-field")
    assert up.shape == (2, 40, 48)
    assert float(up.min()) >= float(maps.min()) - 1e-6
    assert float(up.max()) <= float(maps.max()) + 1e-6
    # Unit (i, j) is reproduced exactly at pixel (8 i, 8 j).
    torch.testing.assert_close(up[:, ::8, ::8], maps)


def test_unknown_alignment_is_rejected():
    with pytest.raises(ValueError, match="alignment must be one of"):
        upsample(torch.rand(1, 2, 2), (4, 4), alignment="corners")


def test_model_forward_takes_the_alignment(build_model):
    torch.manual_seed(0)
    model = build_model(enable_gradcam=True).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        _, default = model(x, return_gradcam=True)
        _, pixel = model(x, return_gradcam=True, gradcam_alignment="pixel")
        _, aligned = model(x, return_gradcam=True, gradcam_alignment="receptive-field")
        _, raw = model(x, return_gradcam=True, gradcam_raw=True)
    assert aligned.shape == pixel.shape == (2, SIZE, SIZE)
    assert not torch.allclose(aligned, pixel)
    torch.testing.assert_close(default, aligned, rtol=0, atol=0)
    stride = SIZE // raw.shape[-1]
    # Sampled at the units' centres, the aligned map is the raw map, min-max normalised.
    low = raw.flatten(1).amin(1)[:, None, None]
    span = raw.flatten(1).amax(1)[:, None, None] - low
    torch.testing.assert_close(aligned[:, ::stride, ::stride], (raw - low) / span)
    with pytest.raises(ValueError, match="alignment must be one of"):
        model(x, return_gradcam=True, gradcam_alignment="center")
