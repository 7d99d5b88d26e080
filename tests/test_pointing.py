"""The pointing game on maps whose peaks we place by hand."""
from __future__ import annotations

import numpy as np
import pytest

from netscope.server.errors import InvalidArgument
from netscope.server.explain.pointing import hit, peaks, pointing_game

BOX = (10, 20, 15, 30)  # x0, y0, x1, y1: columns 10..14, rows 20..29


def peak_at(x: int, y: int, shape=(40, 40)) -> np.ndarray:
    m = np.random.default_rng(0).uniform(0, 0.5, shape)
    m[y, x] = 1.0
    return m


@pytest.mark.parametrize("x, y, inside", [
    (10, 20, True), (14, 29, True), (12, 25, True),  # corners and middle
    (15, 25, False), (12, 30, False),  # x1 and y1 are exclusive
    (9, 25, False), (12, 19, False), (0, 0, False),
])
def test_hit_when_the_peak_is_inside_the_box(x, y, inside):
    assert hit(peak_at(x, y), BOX) is inside


def test_tolerance_is_the_euclidean_distance_to_the_box():
    right = peak_at(14 + 3, 25)  # 3 px right of the last column
    assert not hit(right, BOX) and not hit(right, BOX, tolerance=2.9) and hit(right, BOX, tolerance=3)
    corner = peak_at(14 + 3, 29 + 4)  # 3 right and 4 below the bottom-right pixel: 5 px away
    assert not hit(corner, BOX, tolerance=4.9) and hit(corner, BOX, tolerance=5)


def test_any_of_tied_maxima_inside_counts():
    m = peak_at(0, 0)
    m[25, 12] = 1.0  # a second, equal maximum, inside
    assert len(peaks(m)) == 2 and hit(m, BOX)
    m[25, 12] = 0.999
    assert not hit(m, BOX)


@pytest.mark.parametrize("flat", [np.zeros((40, 40)), np.full((40, 40), 3.5), np.full((40, 40), np.nan)])
def test_a_map_without_a_peak_is_a_miss(flat):
    assert len(peaks(flat)) == 0
    assert not hit(flat, BOX) and not hit(flat, (0, 0, 40, 40))  # not even with the whole image as the box


def test_non_finite_pixels_are_not_peaks():
    m = peak_at(12, 25)
    m[0, 0], m[0, 1] = np.nan, np.inf
    assert hit(m, BOX)


def test_any_box_of_the_class_counts():
    m = peak_at(35, 5)
    assert not hit(m, BOX)
    assert hit(m, [BOX, (30, 0, 40, 10)])


def test_accuracy_counts_hits():
    maps = [peak_at(12, 25), peak_at(0, 0), peak_at(14, 29), np.zeros((40, 40))]
    result = pointing_game(maps, [BOX] * 4)
    assert (result.hits, result.total, result.accuracy) == (2, 4, 0.5)
    with pytest.raises(ValueError):
        pointing_game(maps, [BOX] * 3)  # one box list per map


@pytest.mark.parametrize("heatmap, box, tolerance, message", [
    (np.zeros((2, 4, 4)), BOX, 0, "2-D map"),
    (peak_at(1, 1), (5, 5, 5, 9), 0, "x1 > x0"),
    (peak_at(1, 1), (1, 2, 3), 0, r"\(x0, y0, x1, y1\)"),
    (peak_at(1, 1), BOX, -1, "tolerance"),
])
def test_bad_input_is_refused(heatmap, box, tolerance, message):
    with pytest.raises(InvalidArgument, match=message):
        hit(heatmap, box, tolerance)
