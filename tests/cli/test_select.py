"""--index, --random and --num-images: one rule for explain and figures."""

from __future__ import annotations

import argparse

import pytest

from gradcam_kit.cli.options import select_positions


def test_index_is_sorted_once_and_checked():
    assert select_positions(5, index=[3, 1, 3]) == [1, 3]
    with pytest.raises(ValueError, match=r"--index \[5\] out of range: the input holds 5 images \(0 to 4\)"):
        select_positions(5, index=[0, 5])


def test_random_is_seeded_and_takes_all_with_a_warning_past_the_count():
    first = select_positions(20, random_count=4, seed=3)
    assert first == select_positions(20, random_count=4, seed=3) == sorted(first) and len(set(first)) == 4
    assert first != select_positions(20, random_count=4, seed=4)
    with pytest.warns(UserWarning, match="taking all"):
        assert select_positions(3, random_count=5) == [0, 1, 2]


def test_spread_reaches_both_ends_and_bad_counts_are_refused():
    assert select_positions(10, spread=3) == [0, 4, 9]  # round(4.5) == 4
    assert select_positions(4) == [0, 1, 2, 3]
    for kwargs, flag in (({"random_count": 0}, "--random"), ({"spread": 0}, "--num-images")):
        with pytest.raises(ValueError, match=f"{flag} must be at least 1"):
            select_positions(4, **kwargs)
    with pytest.raises(ValueError, match="not both"):
        select_positions(4, index=[0], random_count=1)


def test_explain_and_figures_select_the_same_images():
    from gradcam_kit.cli import explain, figures

    args = argparse.Namespace(index=None, random=3, seed=7, num_images=None)
    items = list(range(12))
    assert explain._select(items, args) == figures._select(12, args)
