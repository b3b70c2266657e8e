"""Pathfinder pixels made as the original generator makes them (luna_lra.data.pathfinder.raster):
scipy.misc's byte scaling, paddles drawn at 2x and Lanczos-resized, soft markers, and images
whose grey levels look like the original's (levels spread by orientation, a faint halo,
few saturated pixels), at every level and at 128 px."""

from __future__ import annotations

import numpy as np
import pytest

from luna_lra.data.pathfinder import generator as gen
from luna_lra.data.pathfinder import raster

P32 = gen.PARAMS[32]


def test_bytescale_follows_scipy_misc():
    got = raster.bytescale(np.array([[0.0, 0.5], [1.0, 2.0]]))
    assert got.dtype == np.uint8 and got.tolist() == [[0, 64], [128, 255]]  # rounds half up
    shifted = raster.bytescale(np.array([1.0, 2.0, 3.0]))  # the minimum maps to 0
    assert shifted.tolist() == [0, 128, 255]
    assert raster.bytescale(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]
    raw = np.array([[3, 200]], np.uint8)
    assert raster.bytescale(raw) is raw  # uint8 passes unchanged


def test_paddle_stamp_is_a_resampled_2x_drawing():
    half = raster.stamp_half_size(P32.paddle_length, P32.paddle_thickness, 1)
    stamp = raster.paddle_stamp(0.0, P32.paddle_length, P32.paddle_thickness, 1, 2)
    assert stamp.shape == (2 * half + 1, 2 * half + 1) == (9, 9)
    # a horizontal paddle from the centre pixel rightwards: one row, brightest beyond the start
    row = stamp[half]
    assert np.count_nonzero(np.delete(stamp, half, axis=0)) == 0
    assert row[half] > 0 and row[half + 1] == row.max() and row[:half - 1].max() < 16
    assert row.max() < 255  # a line 1 px wide at 2x, resampled to half size, is mid-grey
    # the grey level of the paddle depends on its orientation (the published levels are spread)
    peaks = {int(raster.paddle_stamp(d * np.pi / 180, 2, 0.5, 1, 2).max())
             for d in range(0, 360, 5)}
    assert len(peaks) >= 6 and max(peaks) - min(peaks) >= 30
    with pytest.raises(ValueError, match="whole number of pixels"):
        raster.paddle_stamp(0.0, 2, 0.75, 1, 2)


def test_paddle_mask_is_the_dilated_drawing_resampled():
    mask = raster.paddle_mask_stamp(0.0, P32.paddle_length, P32.paddle_thickness, 1, 2)
    ink = raster.paddle_stamp(0.0, P32.paddle_length, P32.paddle_thickness, 1, 2)
    assert mask.shape == ink.shape
    assert np.count_nonzero(mask >= 128) > np.count_nonzero(ink >= 64)  # wider than the ink
    assert mask.max() == 255 and np.array_equal(mask, mask[::-1])  # symmetric about its axis
    disc = raster.dilate_disc(np.pad(np.array([[255]], np.uint8), 3), 2)
    assert np.count_nonzero(disc) == 13  # the published disc kernel of radius 2


def test_marker_is_a_soft_blob():
    marker = raster.marker_image(32, (16, 16), P32.marker_radius, P32.antialias_scale)
    assert marker.max() == 255
    assert 6 <= np.count_nonzero(marker >= 128) <= 10  # about 8 px at half maximum
    assert np.count_nonzero((marker > 16) & (marker < 240)) >= 6  # soft edges
    yy, xx = np.mgrid[:32, :32]
    centroid = ((marker * yy).sum() / marker.sum(), (marker * xx).sum() / marker.sum())
    # the disc is drawn at (2y, 2x) at 2x, which resamples to (y - 0.25, x - 0.25)
    assert np.allclose(centroid, (15.75, 15.75), atol=0.1)


def images(resolution, level, count, seed=3):
    contour = gen.LEVELS[level][1]
    p = gen.PARAMS[resolution]
    return [gen.generate_image(p, contour, gen.image_rng(seed, resolution, contour, g),
                               return_trace=True) for g in range(count)]


def test_grey_levels_look_like_the_originals():
    """Against the original generator's 32-px hard images (measured on 1,000 made by the
    original itself, results/pathfinder_fidelity.md: 64 grey levels per image, 18% halo
    pixels, 2.3 saturated pixels per image, non-zero mean 59) and unlike flat rendering (32
    levels, 43 saturated pixels, non-zero mean 160)."""
    made = np.stack([img for img, *_ in images(32, "hard", 40)])
    x = made.reshape(len(made), -1)
    assert all(row.max() == 255 for row in x)  # byte-scaled to full range per image
    assert np.mean([len(np.unique(row)) for row in x]) >= 60
    assert 0.15 <= np.mean((x > 0) & (x < 16)) <= 0.35  # the faint resampling halo
    assert (x == 255).sum(1).mean() <= 6
    assert 45 <= x[x > 0].mean() <= 80


def snake_peak(img, polyline, markers, clear):
    """The brightest pixel on a snake's centre line, away from the markers."""
    best = None
    for (y0, x0), (y1, x1) in zip(polyline[:-1], polyline[1:]):
        for t in np.linspace(0.0, 1.0, 5):
            y, x = int(round(y0 + (y1 - y0) * t)), int(round(x0 + (x1 - x0) * t))
            inside = 0 <= y < img.shape[0] and 0 <= x < img.shape[1]
            if inside and min(np.hypot(y - my, x - mx) for my, mx in markers) > clear:
                best = max(best or 0, int(img[y, x]))
    return best


def test_targets_dimmer_than_distractors_at_32_px():
    """paddle_contrast 0.75 x snake_contrast 2 for targets, 2 for distractors: 0.75 as bright.
    (45 images: at 32 px the original draws about 1.2 distractor snakes per image.)"""
    targets, distractors = [], []
    for img, _, _, trace in images(32, "hard", 45):
        for group, out in (("targets", targets), ("distractors", distractors)):
            for line in trace[group]:
                peak = snake_peak(img, line, trace["markers"], P32.marker_radius + 3)
                if peak is not None:
                    out.append(peak)
    assert len(distractors) >= 50
    assert 0.65 <= np.mean(targets) / np.mean(distractors) <= 0.9


@pytest.mark.parametrize("resolution,level,count", [(32, "easy", 12), (32, "intermediate", 12),
                                                    (128, "hard", 2)])
def test_every_level_and_resolution_renders_the_same_way(resolution, level, count):
    for img, label, margin, trace in images(resolution, level, count):
        assert img.dtype == np.uint8 and img.shape == (resolution, resolution)
        assert img.max() == 255 and len(np.unique(img)) >= 30
        lit = img[img > 0]
        assert 0.1 <= np.mean(lit < 16) <= 0.8  # the halo
        assert np.count_nonzero(img == 255) <= 12  # saturated: only the brightest spot(s)
        for y, x in trace["markers"]:
            assert img[y, x] >= 180  # a marker is bright at its centre
        assert len(trace["targets"][0]) == 3 * gen.LEVELS[level][1] - 1
