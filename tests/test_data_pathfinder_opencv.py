"""The original generator's seed test as the real OpenCV decides it. drewlinsley/pathfinder runs
cv2.dilate on its float64 occupancy; OpenCV pads a floating-point image with -DBL_MAX, so a
pixel none of whose kernel taps lands inside the image comes out -DBL_MAX, and the original's
coordinate finder then finds no free pixel at all. Checked here against cv2 itself
(opencv-python-headless, the `fidelity` extra, which the `test` extra pulls in), for every seed
orientation and every resolution's kernels, at the image border; skipped only where cv2 cannot
be imported."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from luna_lra.data.pathfinder import generator as gen
from luna_lra.data.pathfinder import raster

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) is not installed")

# (resolution, margin) of every seed kernel LRA's parameters make
KERNELS = [(32, 1), (64, 1), (128, 2), (128, 3), (256, 3)]
SIDE = 40  # image side for the kernels of 128 and 256 px (the border is what is tested)


def occupancy(n, rng, ring):
    """A float64 occupancy as the original holds one: mostly 0, some pixels at float32 values
    of k / 255, and optionally the 1-pixel border of 1."""
    occ = np.zeros((n, n))
    spots = rng.random((n, n)) < 0.25
    occ[spots] = (rng.integers(1, 256, spots.sum()) / 255).astype(np.float32)
    if ring:
        occ[0, :] = occ[-1, :] = occ[:, 0] = occ[:, -1] = 1.0
    return occ


def original_free_pixels(lined):
    """The original's seed search on cv2's dilation: find_available_coordinates(
    np.ceil(dilated - 0.3), 0), as flat indices."""
    dilated = lined
    if np.min(dilated) < 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(1 - np.ceil(dilated - 0.3).astype(np.uint8))


@pytest.mark.parametrize("resolution,margin", KERNELS)
def test_seed_test_matches_opencv_for_every_orientation(resolution, margin):
    p = gen.PARAMS[resolution]
    full = gen._layout(p, margin)
    side = resolution if resolution <= 64 else SIDE
    small = gen._Layout(dataclasses.replace(p, resolution=side, padding=1), margin)
    rng = np.random.default_rng(resolution + margin)
    accepted = 0
    for degrees in range(-180, 180):
        kernel = raster.seed_kernel(degrees * np.pi / 180, p.paddle_length, p.paddle_thickness,
                                    margin, p.antialias_scale)
        assert kernel.shape == (2 * (p.paddle_length + margin) + 1,) * 2 and kernel.any()
        # the orientation passes at the generator's own resolution iff cv2 leaves no -DBL_MAX
        ok = cv2.dilate(np.zeros((resolution, resolution)), kernel).min() >= 0
        assert full.orientation_ok(degrees) == ok, degrees
        accepted += ok
        for ring in (True, False):
            occ = occupancy(side, rng, ring)
            theirs = cv2.dilate(occ, kernel)
            assert np.array_equal(raster.dilate(occ, kernel), theirs), (degrees, ring)
            got = small.free_tails(occ > gen.FREE_AT_MOST, degrees)
            assert np.array_equal(got, original_free_pixels(theirs)), (degrees, ring)
    # at 32 px only a narrow band of orientations passes, at 64 px a wider one, above nearly all
    assert {32: 30, 64: 95}.get(resolution, 354) <= accepted, accepted
    assert accepted < 360 or resolution >= 128


def test_first_target_seed_matches_opencv():
    """The first target seed: the border plus a band of 2 * seed_distance along the edge,
    dilated by the seed kernel, as initialize_two_seeds builds it."""
    for resolution, margin in KERNELS[:2]:
        p = gen.PARAMS[resolution]
        layout = gen._layout(p, margin)
        n, pad, s = resolution, p.padding, 2 * p.seed_distance
        lined = np.zeros((n, n))
        lined[:pad, :] = lined[-pad:, :] = lined[:, :pad] = lined[:, -pad:] = 1
        lined[:s, :] = lined[n - s:, :] = lined[:, :s] = lined[:, n - s:] = 1
        found = 0
        for degrees in range(-180, 180):
            kernel = raster.seed_kernel(degrees * np.pi / 180, p.paddle_length,
                                        p.paddle_thickness, margin, p.antialias_scale)
            want = original_free_pixels(cv2.dilate(lined, kernel))
            assert np.array_equal(layout.first_tails(degrees), want), (resolution, degrees)
            found += len(want) > 0
        assert 0 < found < 360


def test_growth_dilation_matches_opencv_at_the_border():
    """extend_snake weighs candidates by cv2.dilate(occupancy, disc of radius margin); the
    generator takes the disc's maximum on a canvas that is 0 outside the image."""
    rng = np.random.default_rng(0)
    for resolution, margin in KERNELS[:3]:
        layout = gen._layout(gen.PARAMS[resolution], margin)
        occ = occupancy(resolution, rng, ring=True)
        disc = (layout.circle_discs - layout.circle_heads[:, None])[0]
        canvas = layout.embed(occ)
        ys, xs = np.mgrid[:resolution, :resolution]
        flat = (ys + layout.pad) * layout.w + (xs + layout.pad)
        ours = canvas[flat[..., None] + disc].max(-1)
        y, x = np.ogrid[-margin:margin + 1, -margin:margin + 1]
        struct = (x**2 + y**2 <= margin**2).astype(np.uint8)  # the original's disc kernel
        assert np.array_equal(ours, cv2.dilate(occ, struct)), resolution
