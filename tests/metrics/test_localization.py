"""The pointing game measures the map, not the resize: peaks at the layer's resolution,
placed where the map draws them, each figure beside its ceiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcam_kit.core.engine import upsample
from gradcam_kit.metrics.localization import (
    peak_points,
    point_hits,
    pointing_ceiling,
    pointing_game,
    scaled_tolerance,
    unit_positions,
)

ALIGNMENTS = ("receptive-field", "pixel")


def _discs(size: int, centres: list[tuple[int, int]], radius: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([(rows - y) ** 2 + (cols - x) ** 2 <= radius**2 for y, x in centres])


def _random_lesions(size: int, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    radius = max(2, size // 24)
    centres = torch.randint(radius, size - radius, (count, 2), generator=generator).tolist()
    return _discs(size, centres, radius)


def _perfect_maps(masks: torch.Tensor, grid: int, alignment: str) -> torch.Tensor:
    """All weight on the unit whose drawn position is nearest to each mask (brute force)."""
    size = masks.shape[-1]
    positions = unit_positions(grid, size, alignment)
    units = torch.cartesian_prod(positions, positions)  # (grid * grid, 2)
    maps = torch.zeros(masks.shape[0], grid * grid)
    for n, mask in enumerate(masks):
        pixels = mask.nonzero().float()
        distance = torch.cdist(units, pixels).amin(dim=1)
        maps[n, distance.argmin()] = 1.0
    return maps.view(-1, grid, grid)


def test_an_edge_peak_points_at_its_unit_not_at_the_image_border():
    # The example: a 3x3 map with its peak on the top-middle unit, at 96x96.
    raw = torch.zeros(1, 3, 3)
    raw[0, 0, 1] = 1.0
    upsampled = upsample(raw, (96, 96))
    first = upsampled.flatten(1).argmax(dim=1)
    assert (first // 96, first % 96) == (0, 47)  # the resize's plateau starts on row 0
    torch.testing.assert_close(peak_points(raw, (96, 96), "receptive-field"), torch.tensor([[0.0, 32.0]]))
    torch.testing.assert_close(peak_points(raw, (96, 96), "pixel"), torch.tensor([[15.5, 47.5]]))


@pytest.mark.parametrize("size", [96, 160, 224])
@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_perfect_layer4_maps_score_their_ceiling(size, alignment):
    masks = _random_lesions(size, 40, seed=size)
    grid = size // 32
    tolerance = scaled_tolerance(15, size)
    maps = _perfect_maps(masks, grid, alignment)
    hits = pointing_game(maps, masks, tolerance, alignment=alignment)
    ceiling = pointing_ceiling(masks, (grid, grid), tolerance, alignment=alignment)
    assert torch.equal(hits, ceiling)
    assert ceiling.any()
    # A map's score never exceeds its layer's ceiling, whatever the map.
    noise = torch.rand(40, grid, grid, generator=torch.Generator().manual_seed(1))
    assert not (pointing_game(noise, masks, tolerance, alignment=alignment) & ~ceiling).any()


@pytest.mark.parametrize("size", [96, 160, 224])
@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_the_ceiling_is_one_where_every_lesion_lies_near_a_unit(size, alignment):
    grid = size // 32
    positions = unit_positions(grid, size, alignment).round().long().clamp(0, size - 1).tolist()
    # lesions centred on each unit, the edge units included
    centres = [(y, x) for y in positions for x in positions]
    masks = _discs(size, centres, radius=2)
    tolerance = scaled_tolerance(15, size)
    assert pointing_ceiling(masks, (grid, grid), tolerance, alignment=alignment).all()
    maps = _perfect_maps(masks, grid, alignment)
    assert pointing_game(maps, masks, tolerance, alignment=alignment).all()
    # layer1's 4-pixel grid reaches any lesion
    any_lesion = _random_lesions(size, 20, seed=3)
    assert pointing_ceiling(any_lesion, (size // 4, size // 4), tolerance, alignment=alignment).all()


def test_torchray_mode_is_biased_against_edge_units_and_unit_mode_is_not():
    size, grid = 96, 3
    tolerance = scaled_tolerance(15, size)
    positions = unit_positions(grid, size, "pixel").round().long().tolist()
    centres = [(y, x) for y in positions for x in positions]
    masks = _discs(size, centres, radius=3)
    maps = _perfect_maps(masks, grid, "pixel")
    unit = pointing_game(maps, masks, tolerance, alignment="pixel")
    torchray = pointing_game(maps, masks, tolerance, alignment="pixel", mode="torchray")
    assert unit.all()
    # The resize clamps the border to the edge unit's value and argmax takes the plateau's
    # first pixel: a peak on row 0 or column 0 "points" at the image's top or left edge.
    off_first_row_and_column = [y > 0 and x > 0 for y in range(grid) for x in range(grid)]
    assert torchray.tolist() == off_first_row_and_column


def test_ceiling_matches_brute_force():
    masks = _random_lesions(64, 12, seed=5)
    masks[3] = False  # an empty mask: no ceiling either
    for alignment in ALIGNMENTS:
        for grid in [(2, 2), (4, 3), (8, 8)]:
            ys = unit_positions(grid[0], 64, alignment)
            xs = unit_positions(grid[1], 64, alignment)
            units = torch.cartesian_prod(ys, xs)
            expected = torch.stack([
                point_hits(units, mask.expand(len(units), 64, 64), 4.5).any() for mask in masks
            ])
            assert torch.equal(pointing_ceiling(masks, grid, 4.5, alignment=alignment), expected)
    assert not pointing_ceiling(masks, (8, 8), 4.5)[3]


def test_ties_resolve_to_the_plateau_centre_and_constant_maps_miss():
    maps = torch.zeros(3, 4, 4)
    maps[0, 1:3, 1:3] = 1.0  # a 2x2 plateau: its centre
    maps[1, 0, 0] = maps[1, 0, 2] = 1.0  # two equal peaks: their midpoint
    points = peak_points(maps, (4, 4), "receptive-field")
    torch.testing.assert_close(points[0], torch.tensor([1.5, 1.5]))
    torch.testing.assert_close(points[1], torch.tensor([0.0, 1.0]))
    assert torch.isnan(points[2]).all()
    everywhere = torch.ones(3, 4, 4, dtype=torch.bool)
    assert pointing_game(maps, everywhere, 0.0).tolist() == [False, True, False]


def test_full_resolution_maps_need_no_alignment():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 32, 32, generator=generator)
    masks = torch.rand(6, 32, 32, generator=generator) > 0.97
    assert torch.equal(
        pointing_game(maps, masks, 2.0, alignment="pixel"),
        pointing_game(maps, masks, 2.0, alignment="receptive-field"),
    )


def test_the_commands_offer_the_engines_alignments():
    from gradcam_kit.cli.options import ALIGNMENT_CHOICES
    from gradcam_kit.core.engine import ALIGNMENTS

    assert set(ALIGNMENT_CHOICES) == set(ALIGNMENTS) and ALIGNMENT_CHOICES[0] == "receptive-field"


def test_overlay_strips_mark_the_scored_peak_with_a_small_cross(tmp_path):
    from PIL import Image

    from gradcam_kit.viz.layer_strips import write_overlays

    images = torch.zeros(1, 3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 30:34, 30:34] = True
    raw = torch.zeros(1, 2, 2)
    raw[0, 1, 0] = 1.0  # receptive-field alignment: drawn at (32, 0)
    (path,) = write_overlays(
        [(images, masks, {"layer4": raw}, ["x.png"])], tmp_path, mean=[0.0] * 3, std=[1.0] * 3, scale=1
    )
    strip = np.asarray(Image.open(path))[-64:, 64:]  # below the title bar, the layer's panel
    white = (strip == 255).all(axis=2)
    assert white.sum() == 2 * 5 - 1 - 2  # a cross of arm 2, clipped at the left border
    assert white[32, 0] and white[30, 0] and white[32, 2] and not white[20, 0]
    green = (strip == [0, 255, 0]).all(axis=2)  # the mask's outline: a 6x6 ring round the 4x4 mask
    assert green.sum() == 6 * 6 - 4 * 4 and green[29, 29] and green[34, 34] and not green[31, 31]
