"""The Pathfinder / Path-X image generator of the Long Range Arena (LRA): one image at a time.

It follows the Pathfinder algorithm of Linsley et al. (2018), "Learning long-range spatial
dependencies with horizontal gated recurrent units" (code: drewlinsley/pathfinder,
snakes2.py / snakes.py, which LRA used to make its data); the code here is our own.
`pathfinder_writer` writes data sets of these images; `pathfinder_raster` makes the pixels.

The algorithm
-------------
An image holds two *target* snakes, a number of shorter *distractor* snakes of the same kind,
and two markers. A snake is a chain of "paddles": short line segments of `paddle_length`
pixels and width `paddle_thickness`, about 2 * margin pixels apart (the paths are dashed).
Occupancy is soft, as in the published code: a paddle occupies its published mask (the
drawing at 2x dilated by `margin` and Lanczos-resized, values 0..1), and the published
thresholds apply: a new paddle overlaps when occupancy plus its own mask reaches 1.8
somewhere; a pixel is free for a seed when its occupancy is at most 0.3.

* Target seeds: the first paddle starts at a pixel drawn uniformly from those that pass the
  published seed test against the padding border and a band of 2 * seed_distance pixels along
  the image edge (the test looks at the paddle's fully covered mask pixels placed one pixel
  down and right of the start: a quirk of the published kernel, kept because it decides where
  seeds and markers land); the second starts seed_distance pixels from the first in a random
  direction. Up to 3 tries each (start, far end and pivot inside the image), else the pair is
  redrawn.
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
  skipped. Seeding stops once less than 1% of the image is free. Distractor seeds are drawn
  uniformly among the pixels passing the same seed test against the occupancy.
* Label: 1 (positive) with probability 1/2. One marker sits on the first end (seed start) of
  a random target; the other on the far end of the same target (positive) or of the other
  target (negative).
* Pixels (`pathfinder_raster`), as the published code makes them: each paddle is drawn with
  PIL at antialias_scale x the size and Lanczos-resized with scipy.misc.imresize's byte
  scaling, then scaled by its contrast (targets paddle_contrast * snake_contrast, distractors
  snake_contrast); the markers are discs drawn at antialias_scale x the whole image and
  Lanczos-resized; everything is combined by maximum and byte-scaled to 0..255 as
  scipy.misc.imsave did.

Parameters (`PARAMS`) are those LRA documented for pathfinder32/64/128/256
(long-range-arena, lra_benchmarks/data/pathfinder.py docstrings) on top of the defaults of
drewlinsley/pathfinder's snakes2_wrapper.py (paddle_length 5, padding 22, seed_distance 27,
max paddle retrial 2, max distractor retrial 4, no single-paddle distractors). Levels as in the
release: easy = curv_baseline (6 paddles), intermediate = curv_contour_length_9,
hard = curv_contour_length_14. Path-X is 128 pixels, hard.

Differences from the published generator (the geometry only; the pixels are made the same way):
  * Each paddle's occupancy also covers the gaps on both sides of it (pivot to paddle to next
    pivot: a soft tube of half-width thickness / 2 + margin, from exact distances), so a snake
    is one continuous soft tube. In the published code the middle of a gap is left below its
    overlap threshold, so another snake (at 32 px, in a few percent of images) can pass
    through the gap and touch the path; here different snakes stay apart.
  * A seed paddle must also pass the overlap test (as grown paddles do), so it cannot be
    drawn over the border or another snake.
  * The second target seed is tested against the first (the published code does not test it).
  * Both targets' last paddles enter the occupancy before distractors are drawn (the published
    code forgets the first target's), and a growing target also keeps clear of the other
    target's newest paddle.
  * The number of distractor snakes is recomputed per level from the documented budget
    (20 / 22 / 35 / 30 paddles // distractor_length); the wrapper computed it once.
  * Random draws come from numpy's PCG64 seeded per image: the images differ from the
    release's; the distribution is the published one up to the points above.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from luna_lra.data import pathfinder_raster as raster
from luna_lra.data.pathfinder import LEVEL_DIRS


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
    antialias_scale: int  # paddles and markers are drawn at this many times the size


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

CONTOUR_LENGTHS = {"easy": 6, "intermediate": 9, "hard": 14}  # paddles per target
# level -> (folder name in the release, contour length in paddles)
LEVELS: dict[str, tuple[str, int]] = {k: (LEVEL_DIRS[k], n) for k, n in CONTOUR_LENGTHS.items()}
RESOLUTIONS = tuple(sorted(PARAMS))

MAX_PADDLE_RETRIAL = 2  # a paddle gets 1 + this many draws
MAX_DISTRACTOR_RETRIAL = 4  # a distractor snake gets 1 + this many attempts
STOP_WITH_AVAILABILITY = 0.01  # no more distractor seeds once < 1% of pixels are free


def level_dir(level: str) -> str:
    return LEVELS[level][0]


def distractor_length(contour_length: int) -> int:
    return contour_length // 3


def num_distractors(params: ResolutionParams, contour_length: int) -> int:
    return params.distractor_budget // distractor_length(contour_length)


# ----------------------------------------------------------------------------- geometry

# Thresholds of the published code on its (antialiased, resized) occupancy masks.
SEED_FREE_BELOW = 0.3  # a pixel is free for a seed when the occupancy there is <= 0.3
OVERLAP_AT = 1.8  # a paddle overlaps when occupancy + its own mask reaches 1.8 somewhere


def _ceil_translate(y: float, x: float, theta: float, dist: float) -> tuple[int, int]:
    """The published translate_coord: move `dist` along `theta` (y down), round up."""
    return int(math.ceil(y + dist * math.sin(theta))), int(math.ceil(x + dist * math.cos(theta)))


def _flip(theta: float) -> float:
    return theta + math.pi if theta < 0 else theta - math.pi


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

    ink_offs: np.ndarray  # the paddle's pixels as the published code draws them ...
    ink_vals: np.ndarray  # ... and their uint8 values before the contrast
    tube_offs: np.ndarray  # soft occupancy of the paddle and the gaps on both sides of it
    tube_vals: np.ndarray
    points: tuple  # (y, x) polyline of the tube, relative to the anchor
    head: tuple[int, int]  # far end of the paddle, relative to the anchor
    next_pivot: tuple[int, int]  # relative to the anchor
    theta: float  # the walking direction
    core_offs: np.ndarray | None = None  # seeds: what the published seed test needs free
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
        # room around the image for every paddle's tube and stamp (a pivot may lie outside)
        h = raster.stamp_half_size(L, params.paddle_thickness, margin)
        self.pad = max(int(math.ceil(2 * L + params.paddle_thickness + 3 * margin)),
                       L + 2 * margin + h + 1) + 6
        self.wp = n + 2 * self.pad
        inside = np.zeros((self.wp, self.wp), bool)
        inside[self.pad:self.pad + n, self.pad:self.pad + n] = True
        self.inside_idx = np.flatnonzero(inside.ravel())
        self.inside = inside.ravel()
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

    def _piece(self, anchor_pts, paddle_segment, paddle_from, theta_draw, head, next_pivot,
               theta, pivot=None):
        """A paddle drawn from `paddle_from` (integer) along `theta_draw` as the published code
        draws it, with its occupancy: the published mask of the paddle, and our soft tube over
        the gaps, the segments of the polyline `anchor_pts` other than segment number
        `paddle_segment` (the paddle itself). Everything is relative to the anchor (0, 0)."""
        p, L = self.p, self.p.paddle_length
        fy, fx = int(paddle_from[0]), int(paddle_from[1])
        ink = raster.paddle_stamp(theta_draw, L, p.paddle_thickness, self.margin,
                                  p.antialias_scale)
        mask = raster.paddle_mask_stamp(theta_draw, L, p.paddle_thickness, self.margin,
                                        p.antialias_scale)
        h = ink.shape[0] // 2
        e = int(math.ceil(self.radius)) + 2
        ys = [q[0] for q in anchor_pts] + [fy - h, fy + h]
        xs = [q[1] for q in anchor_pts] + [fx - h, fx + h]
        y0, y1 = int(math.floor(min(ys))) - e, int(math.ceil(max(ys))) + e
        x0, x1 = int(math.floor(min(xs))) - e, int(math.ceil(max(xs))) + e
        dy, dx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        flat = (dy * self.wp + dx).astype(np.int64)
        tube = np.zeros(dy.shape)
        for k, (a, b) in enumerate(zip(anchor_pts[:-1], anchor_pts[1:])):
            if k != paddle_segment:
                gap = np.clip(self.radius + 0.5 - _polyline_distance(dy, dx, [a, b]), 0, 1)
                np.maximum(tube, gap, out=tube)
        window = (slice(fy - h - y0, fy + h + 1 - y0), slice(fx - h - x0, fx + h + 1 - x0))
        tube[window] = np.maximum(tube[window], mask / 255.0)
        core = None
        if pivot is not None:  # a seed: the published seed test's core, see seed_core()
            core = self.seed_core(mask)
        sy, sx = np.nonzero(ink)
        ink_offs = ((sy - h + fy) * self.wp + (sx - h + fx)).astype(np.int64)
        return _Piece(ink_offs, ink[sy, sx], flat[tube > 0], tube[tube > 0].astype(np.float32),
                      tuple(anchor_pts), head, next_pivot, theta, core, pivot)

    def seed_core(self, mask: np.ndarray) -> np.ndarray:
        """Flat offsets, from a seed's start pixel, that must be free (occupancy <= 0.3) for a
        seed to start there: the published test. It dilates the occupancy by the paddle's
        mask pixels that are exactly 255 (its uint8 cast drops the rest, so Lanczos ringing
        leaves gaps), drawn in a (2 (L + m) + 1)^2 kernel with the paddle starting one pixel
        down and right of the kernel's centre: the core is tested one pixel down and right of
        the start pixel, cropped to the kernel. Kept: it decides where seeds, and so markers,
        land."""
        L, m, h = self.p.paddle_length, self.margin, mask.shape[0] // 2
        cy, cx = np.nonzero(mask == 255)
        cy, cx = cy - h, cx - h
        keep = (cy >= -(L + m + 1)) & (cy <= L + m - 1) & (cx >= -(L + m + 1)) & (cx <= L + m - 1)
        return ((cy[keep] + 1) * self.wp + (cx[keep] + 1)).astype(np.int64)

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
                [(0.0, 0.0), end, tuple(map(float, nxt))], 0, (0, 0), theta, head, nxt, theta,
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
                [(0.0, 0.0), near, tuple(map(float, head)), tuple(map(float, nxt))], 1,
                head, flipped, head, nxt, theta)
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
        """Flat start pixels where the published seed test lets a first target paddle start
        (the occupancy is then always the same: the padding border plus the band of
        2 * seed_distance pixels along the edge)."""
        t = self._first_seed.get(degrees)
        if t is None:
            blocked = ((self.border > SEED_FREE_BELOW) | self.seed_band) & self.inside
            pool = self.inside_idx
            offs = self.seed_piece(degrees).core_offs
            t = pool[~blocked[pool[:, None] + offs[None, :]].any(1)]
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

    def _pick_tail(self, core_offs: np.ndarray) -> int | None:
        """A start pixel, uniform among those where the published seed test passes: occupancy
        <= SEED_FREE_BELOW at every core offset inside the image; None if there is none."""
        pt = self.pt
        blocked = (self.occ > SEED_FREE_BELOW) & pt.inside
        pool = pt.inside_idx
        if len(core_offs):  # a cheap first filter: one core offset
            pool = pool[~blocked[pool + core_offs[0]]]
        if not len(pool):
            return None
        for _ in range(4):  # rejection sampling: uniform over the fitting pixels
            cand = pool[self.rng.integers(0, len(pool), 32)]
            ok = ~blocked[cand[:, None] + core_offs[None, :]].any(1)
            if ok.any():
                return int(cand[np.argmax(ok)])
        fits = np.concatenate([
            pool[i:i + 2048][~blocked[pool[i:i + 2048, None] + core_offs[None, :]].any(1)]
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
            flat = self._pick_tail(piece.core_offs)
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

    img = np.zeros(pt.wp * pt.wp, np.float64)
    for snakes, contrast in ((targets, params.paddle_contrast * params.snake_contrast),
                             (distractors, params.snake_contrast)):
        for snake in snakes:
            for anchor, piece in snake.pieces:
                idx = anchor + piece.ink_offs
                img[idx] = np.maximum(img[idx], raster.stamp_values(piece.ink_vals, contrast))
    n = params.resolution
    paddles = img.reshape(pt.wp, pt.wp)[pt.pad:pt.pad + n, pt.pad:pt.pad + n]
    out = raster.finish(paddles, markers, params.marker_radius, params.antialias_scale)
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

