"""Seeded, fast generator for the Pathfinder / Path-X tasks of the Long Range Arena (LRA).

It follows the Pathfinder algorithm of Linsley et al. (2018), "Learning long-range spatial
dependencies with horizontal gated recurrent units" (code: drewlinsley/pathfinder,
snakes2.py / snakes.py, which LRA used to make its data); the code here is our own.

The algorithm
-------------
An image holds two *target* snakes, a number of shorter *distractor* snakes of the same kind,
and two circular markers. A snake is a chain of "paddles": straight line segments of
`paddle_length` pixels and width `paddle_thickness`, about 2 * margin pixels apart (the paths
are dashed). Occupancy is soft, as in the published code (whose masks were antialiased and
resized): a paddle's occupancy at a pixel is the area coverage of the paddle widened by
`margin`, and the published thresholds apply: a new paddle overlaps when occupancy plus its own
mask reaches 1.8 somewhere; a pixel is free for a seed when its occupancy is at most 0.3.

* Target seeds: the first paddle starts at a pixel drawn uniformly from those where the
  paddle, in a random whole-degree orientation, keeps clear of the padding border and of a band
  of 2 * seed_distance pixels along the image edge; the second starts seed_distance pixels from
  the first in a random direction. Up to 3 tries each (start, far end and pivot inside the
  image), else the pair is redrawn.
* Growing (a curvature-limited random walk): from the current paddle, a pivot is placed
  margin pixels beyond its far end. The next paddle's far end is drawn among the integer
  pixels on the circle of radius paddle_length + margin around the pivot, with probability
  proportional to cos(min(continuity * |turn|, pi/2))**2 (so the turn is at most
  90 / continuity degrees) times (1 - the largest occupancy within `margin` of the candidate).
  Up to 3 draws are tried against the overlap test; if all fail, the snake fails. A paddle is
  tested against everything drawn except the paddle it continues.
* The two targets grow alternately to `contour_length` paddles; if either fails, both are
  redrawn from new seeds. Then `distractor_budget // distractor_length` distractor snakes of
  `distractor_length = contour_length // 3` paddles are added. Each is seeded uniformly where
  its first paddle fits, with up to 5 attempts per snake; a snake whose attempts all fail is
  skipped. Seeding stops once less than 1% of the image is free.
* Label: 1 (positive) with probability 1/2. One marker sits on the first end (seed start) of
  a random target; the other on the far end of the same target (positive) or of the other
  target (negative).
* Rendering: antialiased paddles (area coverage of a line of width `paddle_thickness`, from the
  exact pixel-centre distance to the segment), target paddles at intensity
  paddle_contrast * snake_contrast, distractors at snake_contrast, markers (antialiased discs of
  `marker_radius`) at 1; everything is combined by maximum on black and scaled so that the
  brightest pixel is 255, as scipy.misc.imsave did for the published data.

Parameters (`PARAMS`) are those LRA documented for pathfinder32/64/128/256
(long-range-arena, lra_benchmarks/data/pathfinder.py docstrings) on top of the defaults of
drewlinsley/pathfinder's snakes2_wrapper.py (paddle_length 5, padding 22, seed_distance 27,
max paddle retrial 2, max distractor retrial 4, no single-paddle distractors). Levels as in the
release: easy = curv_baseline (6 paddles), intermediate = curv_contour_length_9,
hard = curv_contour_length_14. Path-X is 128 pixels, hard.

Differences from the published generator:
  * Raster: paddles, markers and occupancy are computed analytically at the output resolution
    (coverage from exact distances; round paddle ends) instead of drawing with PIL at
    antialias_scale x the size, Lanczos-resizing and re-quantising.
  * Each paddle's occupancy also covers the gaps on both sides of it (pivot to paddle to next
    pivot), so a snake is one continuous soft tube. In the published code the middle of a gap
    is left below its overlap threshold, so another snake (at 32 px, a few percent of images
    in our tests) can pass through the gap and touch the path; here different snakes, targets
    and distractors alike, stay about a pixel or more apart at 32 px (over 4 px at 128 px).
  * The seed paddles' tubes are tested for overlap too (the published code tests only the
    seeds' positions), including the second target seed against the first.
  * Both targets' last paddles enter the occupancy before distractors are drawn (the published
    code forgets the first target's), and a growing target also keeps clear of the other
    target's newest paddle.
  * The number of distractor snakes is recomputed per level from the documented budget
    (20 / 22 / 35 / 30 paddles // distractor_length); the wrapper computed it once.
  * Random draws come from numpy's PCG64 seeded per image: the images differ from the
    release's; the distribution is the published one up to the points above.

Output (the layout of the LRA release): <out>/<level_dir>/imgs/<batch>/sample_<i>.png (8-bit
grey) and <out>/<level_dir>/metadata/<batch>.npy, which -- as in the release -- is a text file
with one line per image:

    imgs/<batch> sample_<i>.png <i> <label> <continuity> <contour_length> <distractor_length>
        <paddle_length> <paddle_thickness> <paddle_margin> <number of paddle contrasts>

(one line, space-separated; e.g. `imgs/0 sample_0.png 0 1 1.0 14 4 2 0.5 1 1`). <i> counts
from 0 within each batch. Image number g = batch * batch_size + i is drawn from the seed
sequence (seed, resolution, contour_length, g), so a seed gives the same images whatever the
batch size or number of workers. <out>/<level_dir>/generator.json records the parameters.

Resumable: a batch counts as done when its metadata file exists, has one line per image and
every image it lists exists. Images are written first and the metadata last (to a temporary
name, then renamed), so a killed run never leaves a batch that looks done; re-running the same
command regenerates only the batches that are not.

CLI:
    python -m data_prep.pathfinder --out DIR --resolution {32,64,128,256}
        --level {easy,intermediate,hard} --num_images N [--batch_size 1000 --workers K --seed S]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, Iterable

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class ResolutionParams:
    resolution: int
    padding: int  # border (pixels) no paddle may enter
    paddle_length: int
    paddle_thickness: float  # int where the published value is an int (metadata prints it)
    paddle_margins: tuple[int, ...]  # one is drawn per image
    marker_radius: float
    seed_distance: int
    continuity: float
    snake_contrast: float
    paddle_contrast: float
    distractor_budget: int  # num distractor snakes = budget // distractor_length
    antialias_scale: int  # the published supersampling factor; recorded, not used here


PARAMS: dict[int, ResolutionParams] = {
    32: ResolutionParams(32, padding=1, paddle_length=2, paddle_thickness=0.5, paddle_margins=(1,),
                         marker_radius=1.5, seed_distance=7, continuity=1.0, snake_contrast=2.0,
                         paddle_contrast=0.75, distractor_budget=20, antialias_scale=2),
    64: ResolutionParams(64, padding=1, paddle_length=5, paddle_thickness=1, paddle_margins=(1,),
                         marker_radius=2.5, seed_distance=12, continuity=1.8, snake_contrast=0.8,
                         paddle_contrast=1.0, distractor_budget=22, antialias_scale=2),
    128: ResolutionParams(128, padding=1, paddle_length=5, paddle_thickness=1.5,
                          paddle_margins=(2, 3), marker_radius=3, seed_distance=20,
                          continuity=1.8, snake_contrast=0.9, paddle_contrast=1.0,
                          distractor_budget=35, antialias_scale=2),
    256: ResolutionParams(256, padding=22, paddle_length=5, paddle_thickness=2, paddle_margins=(3,),
                          marker_radius=5, seed_distance=27, continuity=1.8, snake_contrast=1.0,
                          paddle_contrast=1.0, distractor_budget=30, antialias_scale=2),
}

# level -> (folder name in the release, contour length in paddles)
LEVELS: dict[str, tuple[str, int]] = {
    "easy": ("curv_baseline", 6),
    "intermediate": ("curv_contour_length_9", 9),
    "hard": ("curv_contour_length_14", 14),
}
RESOLUTIONS = tuple(sorted(PARAMS))

MAX_PADDLE_RETRIAL = 2  # a paddle gets 1 + this many draws
MAX_DISTRACTOR_RETRIAL = 4  # a distractor snake gets 1 + this many attempts
STOP_WITH_AVAILABILITY = 0.01  # no more distractor seeds once < 1% of pixels are free
NUM_PADDLE_CONTRASTS = 1  # the metadata's last field: len(paddle_contrast_list)
DEFAULT_BATCH_SIZE = 1000
PARAMS_FILE = "generator.json"
FORMAT_VERSION = 1


def level_dir(level: str) -> str:
    return LEVELS[level][0]


def distractor_length(contour_length: int) -> int:
    return contour_length // 3


def num_distractors(params: ResolutionParams, contour_length: int) -> int:
    return params.distractor_budget // distractor_length(contour_length)


def metadata_line(batch: int, index: int, label: int, params: ResolutionParams,
                  contour_length: int, margin: int) -> str:
    """One metadata line of the release format (without the newline)."""
    fields = [f"imgs/{batch}", f"sample_{index}.png", index, label, params.continuity,
              contour_length, distractor_length(contour_length), params.paddle_length,
              params.paddle_thickness, margin, NUM_PADDLE_CONTRASTS]
    return " ".join(str(f) for f in fields)


# ----------------------------------------------------------------------------- geometry

# Thresholds of the published code on its (antialiased, resized) occupancy masks.
SEED_FREE_BELOW = 0.3  # a pixel is free for a seed when the occupancy there is <= 0.3
OVERLAP_AT = 1.8  # a paddle overlaps when occupancy + its own mask reaches 1.8 somewhere


def _ceil_translate(y: float, x: float, theta: float, dist: float) -> tuple[int, int]:
    """The published translate_coord: move `dist` along `theta` (y down), round up."""
    return int(math.ceil(y + dist * math.sin(theta))), int(math.ceil(x + dist * math.cos(theta)))


def _flip(theta: float) -> float:
    return theta + math.pi if theta < 0 else theta - math.pi


def _coverage(dist: np.ndarray, width: float) -> np.ndarray:
    """Area of a 1-pixel box at distance `dist` from the axis of a line of `width` inside it."""
    upper = np.minimum(dist + 0.5, width / 2)
    lower = np.maximum(dist - 0.5, -width / 2)
    return np.clip(upper - lower, 0.0, 1.0)


def _polyline_distance(dy: np.ndarray, dx: np.ndarray, pts) -> np.ndarray:
    """Distance from the points (dy, dx) to the polyline through `pts` ((y, x) pairs)."""
    best = np.full(dy.shape, np.inf)
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        vy, vx = y1 - y0, x1 - x0
        n2 = vy * vy + vx * vx
        t = 0.0 if n2 == 0 else np.clip(((dy - y0) * vy + (dx - x0) * vx) / n2, 0.0, 1.0)
        best = np.minimum(best, np.hypot(dy - y0 - t * vy, dx - x0 - t * vx))
    return best


def _commit(canvas: np.ndarray, mask: tuple[np.ndarray, np.ndarray]) -> None:
    idx, vals = mask
    canvas[idx] = np.maximum(canvas[idx], vals)


@dataclasses.dataclass(frozen=True)
class _Piece:
    """A paddle with its occupancy, as flat offsets from an anchor pixel (the start pixel of a
    seed paddle, or the pivot before a grown paddle)."""

    ink_offs: np.ndarray  # antialiased paddle pixels ...
    ink_vals: np.ndarray  # ... and their coverage
    tube_offs: np.ndarray  # soft occupancy of the paddle and the gaps on both sides of it
    tube_vals: np.ndarray
    points: tuple  # (y, x) polyline of the tube, relative to the anchor
    head: tuple[int, int]  # far end of the paddle, relative to the anchor
    next_pivot: tuple[int, int]  # relative to the anchor
    theta: float  # the walking direction
    full_offs: np.ndarray | None = None  # seeds: the paddle's full-coverage core
    pivot: tuple[int, int] | None = None  # seeds: the pivot behind the start pixel


class _Painter:
    """Canvases and cached paddle geometry for one (resolution, margin).

    Canvases are flat float32 arrays padded so every paddle indexes inside them; pixels in
    the padding border and outside the image are occupied (1)."""

    def __init__(self, params: ResolutionParams, margin: int):
        self.p, self.margin = params, margin
        n, L = params.resolution, params.paddle_length
        self.step = L + 2 * margin  # pivot to next pivot
        self.radius = params.paddle_thickness / 2 + margin  # half-width of the occupancy
        self.pad = int(math.ceil(2 * L + params.paddle_thickness + 3 * margin)) + 6
        self.wp = n + 2 * self.pad
        inside = np.zeros((self.wp, self.wp), bool)
        inside[self.pad:self.pad + n, self.pad:self.pad + n] = True
        self.inside_idx = np.flatnonzero(inside.ravel())
        border = np.ones((self.wp, self.wp), np.float32)
        q = self.pad + params.padding
        border[q:q + n - 2 * params.padding, q:q + n - 2 * params.padding] = 0
        self.border = border.ravel()
        # the first target seed keeps 2 * seed_distance clear of the image edge
        band = np.ones((self.wp, self.wp), bool)
        s = 2 * params.seed_distance
        if n - 2 * s > 0:
            band[self.pad + s:self.pad + n - s, self.pad + s:self.pad + n - s] = False
        self.seed_band = band.ravel()
        # disc of radius margin: a candidate's clearance
        dy, dx = np.mgrid[-margin:margin + 1, -margin:margin + 1]
        keep = dy**2 + dx**2 <= margin**2
        self.disc = (dy[keep] * self.wp + dx[keep]).astype(np.int64)
        # integer pixels on the circle of radius L + margin around a pivot (the published code
        # samples angles one pixel of arc apart and truncates the coordinates)
        rad = L + margin
        ang = np.arange(0, 360, 360.0 / (2 * rad * math.pi)) * math.pi / 180
        offs = np.unique(np.stack([np.floor(rad * np.sin(ang)), np.floor(rad * np.cos(ang))],
                                  1).astype(np.int64), axis=0)
        self.circle_dy, self.circle_dx = offs[:, 0], offs[:, 1]
        self.circle_theta = np.arctan2(offs[:, 0], offs[:, 1])
        self.circle_flat = self.circle_dy * self.wp + self.circle_dx
        self._cones: dict[float, tuple] = {}
        self._grown: list = [None] * len(offs)
        self._seeds: dict[int, _Piece] = {}
        self._first_seed: dict[int, np.ndarray] = {}
        # the two targets' newest-paddle canvases, kept all-zero between uses
        self.pending_canvases = (np.zeros(self.wp * self.wp, np.float32),
                                 np.zeros(self.wp * self.wp, np.float32))

    def flat(self, y: int, x: int) -> int:
        return (y + self.pad) * self.wp + (x + self.pad)

    def yx(self, flat: int) -> tuple[int, int]:
        y, x = divmod(int(flat), self.wp)
        return y - self.pad, x - self.pad

    def _piece(self, anchor_pts, paddle_from, theta_draw, head, next_pivot, theta, pivot=None):
        """Rasterises a paddle drawn from `paddle_from` along `theta_draw`, and the tube
        around the polyline `anchor_pts` (all relative to the anchor (0, 0))."""
        p, L = self.p, self.p.paddle_length
        ys = [q[0] for q in anchor_pts]
        xs = [q[1] for q in anchor_pts]
        e = int(math.ceil(self.radius)) + 2
        y0, y1 = int(math.floor(min(ys))) - e, int(math.ceil(max(ys))) + e
        x0, x1 = int(math.floor(min(xs))) - e, int(math.ceil(max(xs))) + e
        dy, dx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        flat = (dy * self.wp + dx).astype(np.int64)
        fy, fx = paddle_from
        end = (fy + L * math.sin(theta_draw), fx + L * math.cos(theta_draw))
        dist = _polyline_distance(dy, dx, [paddle_from, end])
        ink = _coverage(dist, p.paddle_thickness)
        paddle_occ = np.clip(self.radius + 0.5 - dist, 0.0, 1.0)
        tube = np.clip(self.radius + 0.5 - _polyline_distance(dy, dx, anchor_pts), 0.0, 1.0)
        return _Piece(flat[ink > 0], ink[ink > 0].astype(np.float32), flat[tube > 0],
                      tube[tube > 0].astype(np.float32), tuple(anchor_pts), head, next_pivot,
                      theta, flat[paddle_occ >= 1] if pivot is not None else None, pivot)

    def seed_piece(self, degrees: int) -> _Piece:
        """A seed paddle along `degrees`, anchored at its start pixel (the marker's place)."""
        piece = self._seeds.get(degrees)
        if piece is None:
            theta = degrees * math.pi / 180
            L, m = self.p.paddle_length, self.margin
            head = _ceil_translate(0, 0, theta, L)
            pivot = _ceil_translate(head[0], head[1], _flip(theta), L + m)
            nxt = _ceil_translate(pivot[0], pivot[1], theta, self.step)
            end = (L * math.sin(theta), L * math.cos(theta))
            piece = self._seeds[degrees] = self._piece(
                [(0.0, 0.0), end, tuple(map(float, nxt))], (0.0, 0.0), theta, head, nxt, theta,
                pivot)
        return piece

    def grown_piece(self, c: int) -> _Piece:
        """The paddle whose far end is circle candidate c, anchored at the pivot before it:
        drawn from that end back towards the pivot; its tube runs pivot -> near end -> far end
        -> next pivot."""
        piece = self._grown[c]
        if piece is None:
            L = self.p.paddle_length
            theta = float(self.circle_theta[c])
            head = (int(self.circle_dy[c]), int(self.circle_dx[c]))
            flipped = _flip(theta)
            near = (head[0] + L * math.sin(flipped), head[1] + L * math.cos(flipped))
            nxt = _ceil_translate(0, 0, theta, self.step)
            piece = self._grown[c] = self._piece(
                [(0.0, 0.0), near, tuple(map(float, head)), tuple(map(float, nxt))],
                tuple(map(float, head)), flipped, head, nxt, theta)
        return piece

    def cone(self, theta: float):
        """Next-paddle candidates after a paddle walking along theta, relative to the pivot:
        (continuity weights > 0, flat offsets of each candidate's clearance disc, candidate
        indices into the circle arrays)."""
        key = round(theta, 9)
        c = self._cones.get(key)
        if c is None:
            delta = np.abs(self.circle_theta - theta)
            delta = np.minimum(delta, 2 * np.pi - delta)
            w = np.cos(np.minimum(delta * self.p.continuity, 0.5 * np.pi)).clip(0) ** 2
            idx = np.flatnonzero(w > 0)
            c = (w[idx], self.circle_flat[idx][:, None] + self.disc[None, :], idx)
            self._cones[key] = c
        return c

    def first_seed_tails(self, degrees: int) -> np.ndarray:
        """Flat start pixels where a first target paddle fits (the occupancy is then always the
        same: the padding border plus the 2 * seed_distance band)."""
        t = self._first_seed.get(degrees)
        if t is None:
            blocked = (self.border > SEED_FREE_BELOW) | self.seed_band
            pool = self.inside_idx[~blocked[self.inside_idx]]
            offs = self.seed_piece(degrees).full_offs
            t = pool[~blocked[pool[:, None] + offs[None, :]].any(1)] if len(pool) else pool
            self._first_seed[degrees] = t
        return t


@dataclasses.dataclass
class _Snake:
    origin: tuple[int, int]  # start pixel of the seed paddle
    pieces: list  # (anchor flat index, _Piece) of every paddle
    theta: float  # walking direction of the newest paddle
    next_pivot: tuple[int, int]
    pending: tuple  # (offsets, values): tube of the newest paddle, not yet committed
    canvas: np.ndarray | None = None  # targets: this snake's pending tube, else zero

    def terminal(self, pt: _Painter) -> tuple[int, int]:
        """The far end of the last paddle (the seed's start if there is only the seed)."""
        if len(self.pieces) == 1:
            return self.origin
        anchor, piece = self.pieces[-1]
        y, x = pt.yx(anchor)
        return y + piece.head[0], x + piece.head[1]

    def polyline(self, pt: _Painter) -> list[tuple[float, float]]:
        """The core of the snake's occupancy: through every paddle and every gap."""
        out: list[tuple[float, float]] = []
        for anchor, piece in self.pieces:
            y, x = pt.yx(anchor)
            pts = [(y + a, x + b) for a, b in piece.points]
            out += pts if not out else pts[1:]
        return out


class _ImageBuilder:
    """Grows the snakes of one image. All randomness comes from `rng`."""

    def __init__(self, painter: _Painter, contour_length: int, rng: np.random.Generator):
        self.pt, self.rng, self.contour_length = painter, rng, contour_length
        self.n = painter.p.resolution
        self.occ = painter.border.copy()

    def _in_image(self, *pts) -> bool:
        return all(0 <= y < self.n and 0 <= x < self.n for y, x in pts)

    def _seed_fits(self, tail, piece, other: _Snake | None = None) -> bool:
        """The published test (start, head and pivot inside the image), plus: the seed's tube
        (paddle and the gap after it) keeps clear of the occupancy and of `other`'s seed."""
        hy, hx = piece.head
        py, px = piece.pivot
        if not self._in_image(tail, (tail[0] + hy, tail[1] + hx), (tail[0] + py, tail[1] + px)):
            return False
        pix = self.pt.flat(*tail) + piece.tube_offs
        seen = self.occ[pix]
        if other is not None:
            oidx, ovals = other.pending
            _, i, j = np.intersect1d(pix, oidx, assume_unique=True, return_indices=True)
            seen[i] = np.maximum(seen[i], ovals[j])
        return (seen + piece.tube_vals).max() < OVERLAP_AT

    def _new_snake(self, tail, degrees: int, piece: _Piece) -> _Snake:
        flat = self.pt.flat(*tail)
        ny, nx = piece.next_pivot
        return _Snake(origin=tail, pieces=[(flat, piece)], theta=piece.theta,
                      next_pivot=(tail[0] + ny, tail[1] + nx),
                      pending=(flat + piece.tube_offs, piece.tube_vals))

    def _pick_tail(self, full_offs: np.ndarray) -> int | None:
        """A start pixel, uniform among those where the paddle's full-coverage core sees
        occupancy <= SEED_FREE_BELOW everywhere; None if there is none."""
        blocked = self.occ > SEED_FREE_BELOW
        pool = self.pt.inside_idx[~blocked[self.pt.inside_idx]]
        if not len(pool):
            return None
        for _ in range(4):  # rejection sampling: uniform over the fitting pixels
            cand = pool[self.rng.integers(0, len(pool), 32)]
            ok = ~blocked[cand[:, None] + full_offs[None, :]].any(1)
            if ok.any():
                return int(cand[np.argmax(ok)])
        fits = np.concatenate([
            pool[i:i + 2048][~blocked[pool[i:i + 2048, None] + full_offs[None, :]].any(1)]
            for i in range(0, len(pool), 2048)])
        if not len(fits):
            return None
        return int(fits[self.rng.integers(0, len(fits))])

    def seed_targets(self) -> list[_Snake] | None:
        rng, pt = self.rng, self.pt
        first = None
        for trial in range(MAX_PADDLE_RETRIAL + 1):
            deg = int(rng.integers(-180, 180))
            fits = pt.first_seed_tails(deg)
            if not len(fits):
                return None  # no room at all: the published code gives up at once
            tail = pt.yx(fits[rng.integers(0, len(fits))])
            piece = pt.seed_piece(deg)
            if self._seed_fits(tail, piece):
                first = self._new_snake(tail, deg, piece)
                break
        if first is None:
            return None
        t1, sd = first.origin, pt.p.seed_distance
        for trial in range(MAX_PADDLE_RETRIAL + 1):
            deg = int(rng.integers(-180, 180))
            phi = int(rng.integers(0, 360)) * math.pi / 180
            tail = (int(round(t1[0] + sd * math.sin(phi))), int(round(t1[1] + sd * math.cos(phi))))
            piece = pt.seed_piece(deg)
            if self._seed_fits(tail, piece, other=first):
                return [first, self._new_snake(tail, deg, piece)]
        return None

    def seed_distractor(self) -> _Snake | None:
        rng, pt = self.rng, self.pt
        free = np.count_nonzero(self.occ[pt.inside_idx] <= SEED_FREE_BELOW)
        if free / (self.n * self.n) < STOP_WITH_AVAILABILITY:
            return None
        for trial in range(MAX_PADDLE_RETRIAL + 1):
            deg = int(rng.integers(-180, 180))
            piece = pt.seed_piece(deg)
            flat = self._pick_tail(piece.full_offs)
            if flat is None:
                return None
            tail = pt.yx(flat)
            if self._seed_fits(tail, piece):
                return self._new_snake(tail, deg, piece)
        return None

    def extend(self, snake: _Snake, other: np.ndarray | None = None) -> bool:
        """Adds one paddle to `snake`; False on failure. The occupancy it must keep clear of
        is the committed one, plus `other` (the other target's newest paddle) when given.
        Candidates off the image count as blocked (the canvas is occupied there), which is
        the same as the published code's dropping them."""
        pt, occ = self.pt, self.occ
        py, px = snake.next_pivot
        base = (py + pt.pad) * pt.wp + (px + pt.pad)
        w, discs, idx = pt.cone(snake.theta)
        g = base + discs
        near = occ[g] if other is None else np.maximum(occ[g], other[g])
        cmf = np.cumsum(w * np.maximum(1.0 - near.max(1), 0.0))
        total = cmf[-1]
        if total < 1e-4:
            return False
        picks = np.searchsorted(cmf, self.rng.random(MAX_PADDLE_RETRIAL + 1) * total, "right")
        for i in picks.tolist():
            piece = pt.grown_piece(int(idx[min(i, len(idx) - 1)]))
            pix = base + piece.tube_offs
            seen = occ[pix] if other is None else np.maximum(occ[pix], other[pix])
            if (seen + piece.tube_vals).max() >= OVERLAP_AT:
                continue
            _commit(occ, snake.pending)  # the previous paddle is committed now
            if snake.canvas is not None:
                snake.canvas[snake.pending[0]] = 0.0
                snake.canvas[pix] = piece.tube_vals
            snake.pieces.append((base, piece))
            snake.pending = (pix, piece.tube_vals)
            snake.theta = piece.theta
            snake.next_pivot = (py + piece.next_pivot[0], px + piece.next_pivot[1])
            return True
        return False

    def grow_targets(self) -> list[_Snake] | None:
        snakes = self.seed_targets()
        if snakes is None:
            return None
        for snake, canvas in zip(snakes, self.pt.pending_canvases):
            snake.canvas = canvas
            canvas[snake.pending[0]] = snake.pending[1]
        try:
            for _ in range(self.contour_length - 1):
                for k, snake in enumerate(snakes):
                    if not self.extend(snake, snakes[1 - k].canvas):
                        return None
        finally:
            for snake in snakes:
                snake.canvas[snake.pending[0]] = 0.0
                snake.canvas = None
        for snake in snakes:
            _commit(self.occ, snake.pending)
        return snakes

    def grow_distractor(self, length: int) -> _Snake | None:
        saved = self.occ.copy()
        snake = self.seed_distractor()
        if snake is None:
            return None
        for _ in range(length - 1):
            if not self.extend(snake):
                self.occ = saved
                return None
        _commit(self.occ, snake.pending)
        return snake


def generate_image(params: ResolutionParams, contour_length: int, rng: np.random.Generator,
                   return_trace: bool = False):
    """One image: (uint8 [res, res], label, paddle margin[, trace]).

    trace (for tests): {'targets': [polyline, polyline], 'distractors': [polyline, ...],
    'markers': [(y, x), (y, x)], 'marked': (target of marker 0, target of marker 1),
    'paddles': [[(y0, x0, y1, x1) per paddle] per target]}; a polyline is the core of a
    snake's occupancy, through its paddles and the gaps between them.
    """
    label = int(rng.integers(0, 2))
    margin = params.paddle_margins[int(rng.integers(0, len(params.paddle_margins)))]
    pt = _painter(params, margin)
    while True:
        builder = _ImageBuilder(pt, contour_length, rng)
        targets = builder.grow_targets()
        if targets is not None:
            break
    distractors = []
    dlen = distractor_length(contour_length)
    for _ in range(num_distractors(params, contour_length)):
        for attempt in range(MAX_DISTRACTOR_RETRIAL + 1):
            snake = builder.grow_distractor(dlen)
            if snake is not None:
                distractors.append(snake)
                break
    origin_idx = int(rng.integers(0, 2))
    terminal_idx = origin_idx if label == 1 else 1 - origin_idx
    markers = [targets[origin_idx].origin, targets[terminal_idx].terminal(pt)]

    img = np.zeros(pt.wp * pt.wp, np.float32)
    for snakes, contrast in ((targets, params.paddle_contrast * params.snake_contrast),
                             (distractors, params.snake_contrast)):
        for snake in snakes:
            for anchor, piece in snake.pieces:
                idx = anchor + piece.ink_offs
                img[idx] = np.maximum(img[idx], piece.ink_vals * contrast)
    n = params.resolution
    image = img.reshape(pt.wp, pt.wp)[pt.pad:pt.pad + n, pt.pad:pt.pad + n]
    r = params.marker_radius
    for my, mx in markers:
        lo_y, hi_y = max(0, int(my - r - 1)), min(n, int(my + r + 2))
        lo_x, hi_x = max(0, int(mx - r - 1)), min(n, int(mx + r + 2))
        yy, xx = np.mgrid[lo_y:hi_y, lo_x:hi_x]
        disc = np.clip(r + 0.5 - np.hypot(yy - my, xx - mx), 0.0, 1.0).astype(np.float32)
        np.maximum(image[lo_y:hi_y, lo_x:hi_x], disc, out=image[lo_y:hi_y, lo_x:hi_x])
    out = (np.clip(image * (255.0 / float(image.max())), 0, 255) + 0.5).astype(np.uint8)
    if not return_trace:
        return out, label, margin
    trace = {"targets": [s.polyline(pt) for s in targets],
             "distractors": [s.polyline(pt) for s in distractors],
             "markers": markers, "marked": (origin_idx, terminal_idx)}
    return out, label, margin, trace


_PAINTERS: dict[tuple, _Painter] = {}


def _painter(params: ResolutionParams, margin: int) -> _Painter:
    key = (params, margin)
    if key not in _PAINTERS:
        _PAINTERS[key] = _Painter(params, margin)
    return _PAINTERS[key]


def image_rng(seed: int, resolution: int, contour_length: int, number: int) -> np.random.Generator:
    """The generator of image `number` (counting over all batches) of a data set."""
    return np.random.default_rng([int(seed), int(resolution), int(contour_length), int(number)])


# ----------------------------------------------------------------------------- files


def _write_text_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def batch_sizes(num_images: int, batch_size: int) -> list[int]:
    return [min(batch_size, num_images - s) for s in range(0, num_images, batch_size)]


def batch_is_complete(root: str, batch: int, expected: int) -> bool:
    """Metadata present with `expected` lines, and every image it lists present."""
    meta = os.path.join(root, "metadata", f"{batch}.npy")
    try:
        with open(meta) as f:
            lines = [l.split() for l in f.read().splitlines() if l.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    if len(lines) != expected or any(len(l) < 4 for l in lines):
        return False
    return all(os.path.isfile(os.path.join(root, l[0], l[1])) for l in lines)


def _generate_chunk(task: tuple) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Worker: images [start, end) of one batch -> (batch, start, [(index, label, margin)])."""
    root, resolution, contour_length, seed, batch, batch_size, start, end = task
    params = PARAMS[resolution]
    folder = os.path.join(root, "imgs", str(batch))
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i in range(start, end):
        rng = image_rng(seed, resolution, contour_length, batch * batch_size + i)
        img, label, margin = generate_image(params, contour_length, rng)
        path = os.path.join(folder, f"sample_{i}.png")
        tmp = os.path.join(folder, f".tmp_{os.getpid()}_sample_{i}.png")
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)  # never a torn file, even with a leftover worker still writing
        rows.append((i, label, margin))
    return batch, start, rows


def _check_params_file(root: str, record: dict) -> None:
    path = os.path.join(root, PARAMS_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError:
                old = None
        if old != record:
            diff = ({k: (old.get(k), record.get(k)) for k in set(old) | set(record)
                     if old.get(k) != record.get(k)} if isinstance(old, dict) else "unreadable")
            raise ValueError(
                f"{path}: this folder was generated with other parameters ({diff}, as (on disk, "
                f"requested)); use another --out or remove {root} to start again")
    else:
        os.makedirs(root, exist_ok=True)
        _write_text_atomic(path, json.dumps(record, indent=1) + "\n")


def _mp_context():
    # fork is fastest, but unsafe once a multithreaded library (JAX) is loaded in this process
    if "fork" in multiprocessing.get_all_start_methods() and "jax" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def generate(out: str, resolution: int, level: str, num_images: int,
             batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, seed: int = 0,
             show_progress: bool = True) -> dict[str, Any]:
    """Writes (or completes) a data set under out/<level_dir>; returns a summary dict."""
    if resolution not in PARAMS:
        raise ValueError(f"resolution {resolution}: expected one of {RESOLUTIONS}")
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: expected one of {sorted(LEVELS)}")
    if num_images < 1 or batch_size < 1:
        raise ValueError("num_images and batch_size must be >= 1")
    t0 = time.time()
    root = os.path.join(out, level_dir(level))
    contour_length = LEVELS[level][1]
    record = {"format": FORMAT_VERSION, "resolution": resolution, "level": level,
              "num_images": num_images, "batch_size": batch_size, "seed": seed,
              "params": dataclasses.asdict(PARAMS[resolution])}
    record["params"]["paddle_margins"] = list(record["params"]["paddle_margins"])
    _check_params_file(root, record)
    os.makedirs(os.path.join(root, "metadata"), exist_ok=True)
    sizes = batch_sizes(num_images, batch_size)
    todo = [b for b, size in enumerate(sizes) if not batch_is_complete(root, b, size)]
    for b in todo:  # a stale metadata file must not outlive the images it describes
        meta = os.path.join(root, "metadata", f"{b}.npy")
        if os.path.exists(meta):
            os.unlink(meta)
    workers = max(1, int(workers or os.cpu_count() or 1))
    n_todo = sum(sizes[b] for b in todo)
    chunk = max(1, min(batch_size, 250, math.ceil(n_todo / (4 * workers)) if n_todo else 1))
    tasks = [(root, resolution, contour_length, seed, b, batch_size, s, min(s + chunk, sizes[b]))
             for b in todo for s in range(0, sizes[b], chunk)]
    remaining = {b: math.ceil(sizes[b] / chunk) for b in todo}
    rows: dict[int, list] = {b: [] for b in todo}

    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=n_todo, unit="img", desc=f"pathfinder{resolution}/{level_dir(level)}",
                   dynamic_ncols=True, file=sys.stderr)

    def finish(result):
        b, _, chunk_rows = result
        rows[b] += chunk_rows
        remaining[b] -= 1
        if bar is not None:
            bar.update(len(chunk_rows))
        if remaining[b] == 0:
            lines = [metadata_line(b, i, label, PARAMS[resolution], contour_length, margin)
                     for i, label, margin in sorted(rows.pop(b))]
            _write_text_atomic(os.path.join(root, "metadata", f"{b}.npy"),
                               "\n".join(lines) + "\n")

    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                finish(_generate_chunk(task))
        else:
            with _mp_context().Pool(min(workers, len(tasks))) as pool:
                for result in pool.imap_unordered(_generate_chunk, tasks):
                    finish(result)
    finally:
        if bar is not None:
            bar.close()
    return {"root": root, "generated_batches": todo,
            "skipped_batches": [b for b in range(len(sizes)) if b not in todo],
            "generated_images": n_todo, "seconds": time.time() - t0}


def check(data_dir: str, resolution: int) -> int:
    """Prints, per level found under data_dir, the image count, labels and the split sizes;
    every metadata line is validated and every listed image must exist. Non-zero if none."""
    from luna_lra.data import DataError
    from luna_lra.data import pathfinder as task

    found = 0
    for level in LEVELS:
        try:
            level_dir = task.find_level_dir(data_dir, resolution, level)
        except DataError:
            print(f"{level}: no {task.level_dir_name(level)}/ under {data_dir}")
            continue
        try:
            entries = [e for path in task.metadata_files(level_dir)
                       for e in task.read_metadata(path, level_dir)]
        except DataError as e:
            print(f"{level}: {e}")
            return 1
        missing = [path for path, _, _ in entries if not os.path.isfile(path)]
        labels = np.bincount([label for _, label, _ in entries], minlength=2)
        train_end, val_end = task.split_bounds(len(entries))
        print(f"{level} ({level_dir}): {len(entries)} images, label 0: {labels[0]}, label 1: "
              f"{labels[1]}; train/val/test {train_end}/{val_end - train_end}/"
              f"{len(entries) - val_end}; {len(missing)} listed images missing"
              + (f" (first: {missing[0]})" if missing else ""))
        found += 1
    if not found:
        print(f"no Pathfinder levels in {data_dir}; make one with: python -m data_prep.pathfinder "
              f"--out {data_dir} --resolution {resolution} --level hard --num_images N")
    return 0 if found else 1


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.pathfinder",
        description="Generate Pathfinder / Path-X images in the LRA release layout "
                    "(<out>/<level_dir>/imgs/<batch>/sample_<i>.png, metadata/<batch>.npy).")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="output folder (e.g. data/pathfinder32)")
    what.add_argument("--check", metavar="DIR",
                      help="report what DIR holds (images per level, labels, LRA's 80/10/10 "
                           "split) and exit")
    ap.add_argument("--resolution", type=int, required=True, choices=RESOLUTIONS)
    ap.add_argument("--level", choices=list(LEVELS),
                    help="easy=curv_baseline, intermediate=curv_contour_length_9, "
                         "hard=curv_contour_length_14 (required with --out)")
    ap.add_argument("--num_images", type=int, help="required with --out")
    ap.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(None if argv is None else list(argv))
    if args.check:
        return check(args.check, args.resolution)
    if args.level is None or args.num_images is None:
        ap.error("--out needs --level and --num_images")
    try:
        summary = generate(args.out, args.resolution, args.level, args.num_images,
                           batch_size=args.batch_size, workers=args.workers, seed=args.seed,
                           show_progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['root']}: generated {summary['generated_images']} images in "
          f"{len(summary['generated_batches'])} batches, {len(summary['skipped_batches'])} "
          f"batches already complete, {summary['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
