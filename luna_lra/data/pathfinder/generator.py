"""The Pathfinder / Path-X image generator of the Long Range Arena (LRA): one image at a time.

It runs the process of the original generator (Linsley et al., 2018, "Learning long-range
spatial dependencies with horizontal gated recurrent units"; code: drewlinsley/pathfinder,
snakes2.py / snakes.py, which LRA used to make its data) step for step, quirks included; the
code is our own. Given the same random draws it makes the same images, bit for bit (checked
against the original running on the real OpenCV: results/pathfinder_fidelity.md). `writer`
writes data sets of these images; `raster` makes the pixels.

The process
-----------
An image holds two *target* snakes, up to `distractor_budget // distractor_length` shorter
*distractor* snakes, and two markers. A snake is a chain of paddles (segments of
`paddle_length` pixels, `paddle_thickness` wide) with gaps of 2 * margin between them.
Occupancy is the float64 image `occ` of the original's `mask`: 1 on the `padding` border, and
each committed paddle's mask (its 2x drawing dilated by margin, Lanczos-resized, 0..1) by
maximum.

* Seeds. A seed paddle's start pixel is drawn uniformly from the pixels where the original's
  seed test passes: cv2.dilate of the occupancy by the seed kernel (`raster.seed_kernel`, the
  paddle's full-strength mask pixels, one pixel down and right of the kernel's centre) is
  <= 0.3. OpenCV pads a float64 image with -DBL_MAX, so where some image pixel gets no kernel
  tap inside the image the dilation holds -DBL_MAX, and the original's coordinate finder then
  finds no free pixel at all: the seed fails for that orientation, wherever it would go
  (`_Layout.orientation_ok`; at 32 px only about 30 of the 360 orientations pass, at 128 px
  nearly all). The far end and the pivot (margin behind the start) must lie in the image;
  up to 3 tries, each with a new orientation.
* Targets (`two_snakes`). The first seed is tested against the border plus a band of
  2 * seed_distance pixels along the edge; a failed test (no free pixel) drops the whole
  try. The second starts seed_distance pixels from the first in a random direction, untested
  but for its far end and pivot. Then the two grow alternately to `contour_length` paddles;
  any failure drops the try, and the image starts again from a fresh occupancy.
* Growing (`extend_snake`): the next pivot lies L + 2 m beyond the last; the next paddle's far
  end is drawn among the integer pixels of the circle of radius L + m around it, with weights
  cos(min(continuity * |turn|, pi / 2))^2 times (1 - the occupancy dilated by a disc of radius
  m there), by the original's inverse-CDF draw (a draw past the end picks the first candidate).
  Up to 3 draws must pass the overlap test: occupancy + the paddle's mask < 1.8 everywhere.
  On success the snake's previous paddle is committed to the occupancy; the newest stays
  pending, so a paddle is never tested against the one it continues -- nor, for the targets,
  against the other target's newest paddle. When both targets are grown only the second
  target's last paddle is committed (the first's never is).
* Distractors (`make_many_snakes`): `distractor_budget // distractor_length` snakes of
  `distractor_length = contour_length // 3` paddles, each with up to 5 attempts (a seed
  orientation that fails, or too little free space -- under 1% of the pixels at most 0.3 --
  costs an attempt); a snake that fails all its attempts is skipped; a grown one is committed
  whole.
* Label: 1 with probability 1/2. One marker on the start of a random target; the other on the
  far end of the same target (positive) or of the other one (negative). Pixels: `raster`.

Random draws mirror the original's, call for call (numpy's randint / rand); by default they
come from numpy's PCG64 seeded per image (`image_rng`), so the images are not the release's,
but a `numpy.random.RandomState` seeded like the original's global state gives its images.

Parameters (`PARAMS`) are those LRA documented for pathfinder32/64/128/256
(long-range-arena, lra_benchmarks/data/pathfinder.py docstrings) on top of the defaults of
drewlinsley/pathfinder's snakes2_wrapper.py (paddle_length 5, padding 22, seed_distance 27,
max paddle retrial 2, max distractor retrial 4, no single-paddle distractors). Levels as in the
release: easy = curv_baseline (6 paddles), intermediate = curv_contour_length_9,
hard = curv_contour_length_14; the number of distractors is recomputed per level from the
documented budget (20 / 22 / 35 / 30 paddles // distractor_length). Path-X is 128 px, hard.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from luna_lra.data.pathfinder import raster


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
RESOLUTIONS = tuple(sorted(PARAMS))

# level -> (its folder, as the original's wrapper names it; paddles per target)
LEVELS: dict[str, tuple[str, int]] = {
    "easy": ("curv_baseline", 6),
    "intermediate": ("curv_contour_length_9", 9),
    "hard": ("curv_contour_length_14", 14),
}
LEVEL_DIRS: dict[str, str] = {level: folder for level, (folder, _) in LEVELS.items()}

MAX_PADDLE_RETRIAL = 2  # a seed or a paddle gets 1 + this many draws
MAX_DISTRACTOR_RETRIAL = 4  # a distractor snake gets 1 + this many attempts
STOP_WITH_AVAILABILITY = 0.01  # no distractor seed once < 1% of the pixels are free
FREE_AT_MOST = 0.3  # a pixel is free for a seed when its (dilated) occupancy is <= 0.3
OVERLAP_AT = 1.8  # a paddle overlaps when occupancy + its mask reaches 1.8 somewhere
DEAD_END_BELOW = 1e-4  # a snake stops when its candidates' total weight is below this


def distractor_length(contour_length: int) -> int:
    return contour_length // 3


def num_distractors(params: ResolutionParams, contour_length: int) -> int:
    return params.distractor_budget // distractor_length(contour_length)


# ----------------------------------------------------------------------------- geometry


_SIN_COS: dict[float, tuple[float, float]] = {}


def _sin_cos(theta: float) -> tuple[float, float]:
    """numpy's sin and cos (the original's functions; libm's may differ in the last bit)."""
    sc = _SIN_COS.get(theta)
    if sc is None:
        sc = _SIN_COS[theta] = (float(np.sin(theta)), float(np.cos(theta)))
    return sc


def _translate(y: int, x: int, theta: float, dist: int) -> tuple[int, int]:
    """The original's translate_coord: move `dist` along `theta` (y down), round up."""
    s, c = _sin_cos(theta)
    return math.ceil(y + float(dist) * s), math.ceil(x + float(dist) * c)


def _flip(theta: float) -> float:
    """The original's flip_by_pi."""
    return theta + np.pi if theta < 0 else theta - np.pi


def _reverse(theta: float) -> float:
    """The original's seed reversal (theta + pi < pi, not theta < 0, decides)."""
    return theta + np.pi if theta + np.pi < np.pi else theta - np.pi


@dataclasses.dataclass(frozen=True)
class _Paddle:
    """A paddle stamp as flat offsets from the pixel it is drawn from."""

    theta: float  # the drawing's orientation
    mask_offs: np.ndarray  # the mask's non-zero pixels ...
    mask_vals: np.ndarray  # ... and their values (float32 values of uint8 / 255, as float64)
    ink_offs: np.ndarray  # the drawing's non-zero pixels ...
    ink: np.ndarray  # ... and their uint8 values before the contrast


class _Layout:
    """Cached geometry for one (resolution, margin): flat canvases padded by `pad` pixels on
    every side (outside the image the occupancy stays 0 and nothing is committed, which is
    the same as the original's cropping), paddle stamps, seed kernels and the circle of
    next-paddle candidates."""

    def __init__(self, params: ResolutionParams, margin: int):
        self.p, self.margin = params, margin
        n, L = params.resolution, params.paddle_length
        self.n = n
        self.half = raster.stamp_half_size(L, params.paddle_thickness, margin)
        self.pad = self.half + L + 2 * margin + 2
        w = self.w = n + 2 * self.pad
        image = np.zeros((w, w))
        image[self.pad:self.pad + n, self.pad:self.pad + n] = 1.0
        self.inside = image.ravel()  # 1.0 on the image, 0.0 around it
        interior = np.zeros((w, w), bool)  # a stamp drawn from here lies inside the image
        interior[self.pad + self.half:self.pad + n - self.half,
                 self.pad + self.half:self.pad + n - self.half] = True
        self.interior = interior.ravel()
        border = np.zeros((n, n))
        q = params.padding
        border[:q, :], border[-q:, :], border[:, :q], border[:, -q:] = 1, 1, 1, 1
        self.border = self.embed(border)
        # the first target seed: the border plus a band of 2 * seed_distance along the edge
        band = border.copy()
        s = 2 * params.seed_distance
        band[:s, :], band[n - s:, :], band[:, :s], band[:, n - s:] = 1, 1, 1, 1
        self.band_blocked = band > FREE_AT_MOST
        # the circle: the original samples angles one pixel of arc apart on radius L + m and
        # truncates pivot + offset; pivot + floor(offset) is the same pixel unless an offset
        # lies within rounding of a whole number (checked)
        rad = L + margin
        angles = np.arange(0, 360, 360. / (2 * rad * np.pi)) * np.pi / 180
        sy, sx = rad * np.sin(angles), rad * np.cos(angles)
        for s_ in (sy, sx):
            frac = s_ - np.floor(s_)
            if np.any((frac != 0) & ((frac < 1e-9) | (frac > 1 - 1e-9))):
                raise AssertionError("a circle offset lies within rounding of a whole pixel")
        offs = np.unique(np.stack([np.floor(sy), np.floor(sx)], 1).astype(np.int64), axis=0)
        self.circle_dy, self.circle_dx = offs[:, 0].copy(), offs[:, 1].copy()
        self.circle_theta = np.arctan2(self.circle_dy, self.circle_dx)
        dy, dx = np.mgrid[-margin:margin + 1, -margin:margin + 1]
        keep = dy**2 + dx**2 <= margin**2  # the original's disc kernel
        disc = dy[keep] * w + dx[keep]
        self.circle_discs = (self.circle_dy * w + self.circle_dx)[:, None] + disc[None, :]
        self.circle_heads = self.circle_dy * w + self.circle_dx
        self.every_candidate = np.arange(len(offs))
        self.reach = rad  # no candidate is farther than this from its pivot, per axis
        self._weights: dict[float, np.ndarray] = {}
        self._grown: list[_Paddle | None] = [None] * len(offs)
        self._seeds: dict[int, _Paddle] = {}
        self._taps: dict[int, list[tuple[int, int]]] = {}
        self._ok: dict[int, bool] = {}
        self._first_tails: dict[int, np.ndarray] = {}

    def embed(self, image: np.ndarray) -> np.ndarray:
        """A flat padded canvas holding `image` [n, n]."""
        out = np.zeros((self.w, self.w))
        out[self.pad:self.pad + self.n, self.pad:self.pad + self.n] = image
        return out.ravel()

    def view(self, canvas: np.ndarray) -> np.ndarray:
        """The image part [n, n] of a flat canvas (a view)."""
        q, n = self.pad, self.n
        return canvas.reshape(self.w, self.w)[q:q + n, q:q + n]

    def flat(self, y: int, x: int) -> int:
        return (y + self.pad) * self.w + (x + self.pad)

    def _paddle(self, theta: float) -> _Paddle:
        p = self.p
        args = (theta, p.paddle_length, p.paddle_thickness, self.margin, p.antialias_scale)
        ink, mask = raster.paddle_stamp(*args), raster.paddle_mask_stamp(*args)
        h = self.half
        my, mx = np.nonzero(mask)
        iy, ix = np.nonzero(ink)
        vals = (mask[my, mx].astype(np.float64) / 255).astype(np.float32).astype(np.float64)
        return _Paddle(theta, ((my - h) * self.w + (mx - h)).astype(np.int64), vals,
                       ((iy - h) * self.w + (ix - h)).astype(np.int64), ink[iy, ix])

    def seed_paddle(self, degrees: int) -> _Paddle:
        paddle = self._seeds.get(degrees)
        if paddle is None:
            paddle = self._seeds[degrees] = self._paddle(degrees * np.pi / 180)
        return paddle

    def grown_paddle(self, c: int) -> _Paddle:
        """The paddle whose far end is circle candidate c, drawn from there back to the pivot."""
        paddle = self._grown[c]
        if paddle is None:
            paddle = self._grown[c] = self._paddle(_flip(self.circle_theta[c]))
        return paddle

    def weights(self, theta: float) -> np.ndarray:
        """The continuity weights of every circle candidate after a paddle along theta."""
        w = self._weights.get(theta)
        if w is None:
            turn = np.abs(self.circle_theta - theta)
            delta = np.minimum(np.minimum(turn, 2 * np.pi - turn) * self.p.continuity,
                               0.5 * np.pi)
            w = self._weights[theta] = np.maximum(np.cos(delta), 0) ** 2
        return w

    def taps(self, degrees: int) -> list[tuple[int, int]]:
        """The seed kernel's taps as (dy, dx) from the pixel being tested."""
        t = self._taps.get(degrees)
        if t is None:
            p = self.p
            kernel = raster.seed_kernel(degrees * np.pi / 180, p.paddle_length,
                                        p.paddle_thickness, self.margin, p.antialias_scale)
            c = kernel.shape[0] // 2
            t = self._taps[degrees] = [(int(y) - c, int(x) - c) for y, x in
                                       zip(*np.nonzero(kernel))]
        return t

    def orientation_ok(self, degrees: int) -> bool:
        """Whether every image pixel gets a seed-kernel tap inside the image: else cv2.dilate
        leaves -DBL_MAX there and the original finds no free pixel for this orientation."""
        ok = self._ok.get(degrees)
        if ok is None:
            n = self.n
            covered = np.zeros((n, n), bool)
            for dy, dx in self.taps(degrees):
                covered[max(0, -dy):n - max(0, dy), max(0, -dx):n - max(0, dx)] = True
            ok = self._ok[degrees] = bool(covered.all())
        return ok

    def free_tails(self, blocked: np.ndarray, degrees: int) -> np.ndarray:
        """Row-major flat indices (y * n + x) of the pixels where a seed along `degrees` may
        start: none of its taps inside the image is blocked (occupancy > 0.3); none at all
        when the orientation fails (see orientation_ok)."""
        if not self.orientation_ok(degrees):
            return np.zeros(0, np.int64)
        n = self.n
        hit = np.zeros((n, n), bool)
        for dy, dx in self.taps(degrees):
            hit[max(0, -dy):n - max(0, dy), max(0, -dx):n - max(0, dx)] |= \
                blocked[max(0, dy):n - max(0, -dy), max(0, dx):n - max(0, -dx)]
        return np.flatnonzero(~hit)

    def first_tails(self, degrees: int) -> np.ndarray:
        t = self._first_tails.get(degrees)
        if t is None:
            t = self._first_tails[degrees] = self.free_tails(self.band_blocked, degrees)
        return t


_LAYOUTS: dict[tuple, _Layout] = {}


def _layout(params: ResolutionParams, margin: int) -> _Layout:
    key = (params, margin)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _Layout(params, margin)
    return _LAYOUTS[key]


# ----------------------------------------------------------------------------- snakes


@dataclasses.dataclass
class _Snake:
    tail: tuple[int, int]  # start pixel of the seed paddle (a marker's place)
    head: tuple[int, int]  # far end of the newest paddle (the seed's start while it is alone)
    pivot: tuple[int, int]  # the newest paddle's pivot
    theta: float  # the newest paddle's direction
    paddles: list  # (flat pixel it is drawn from, _Paddle) of every paddle
    pending: tuple  # the newest paddle's (flat pixel, _Paddle): not yet in the occupancy
    pivots: list  # for the trace: the pivot of every grown paddle


@dataclasses.dataclass(frozen=True)
class _Draws:
    """The two draws the original makes (numpy's randint and rand)."""

    integers: Callable[[int, int], int]  # (low, high) -> an integer in [low, high)
    random: Callable[[], float]  # a float in [0, 1)


class _ImageBuilder:
    """Grows the snakes of one image on the original's occupancy. All randomness: `rng`."""

    def __init__(self, layout: _Layout, rng):
        self.g, self.rng = layout, rng
        self.occ = layout.border.copy()

    def _in_image(self, *points) -> bool:
        n = self.g.n
        return all(0 <= y < n and 0 <= x < n for y, x in points)

    def _commit(self, pending) -> None:
        """Adds a paddle's mask to the occupancy, within the image only (the original crops)."""
        anchor, paddle = pending
        idx = anchor + paddle.mask_offs
        vals = paddle.mask_vals
        if not self.g.interior[anchor]:
            vals = vals * self.g.inside[idx]
        self.occ[idx] = np.maximum(self.occ[idx], vals)

    def _seed(self, tail: tuple[int, int], degrees: int) -> _Snake | None:
        """A seed along `degrees` starting at `tail`, if its far end and pivot are inside."""
        theta = degrees * np.pi / 180
        L, m = self.g.p.paddle_length, self.g.margin
        head = _translate(tail[0], tail[1], theta, L)
        pivot = _translate(head[0], head[1], _reverse(theta), L + m)
        if not self._in_image(head, pivot):
            return None
        drawn = (self.g.flat(*tail), self.g.seed_paddle(degrees))
        return _Snake(tail, tail, pivot, theta, [drawn], drawn, [])

    def _draw_tail(self, tails: np.ndarray) -> tuple[int, int]:
        return divmod(int(tails[self.rng.integers(0, len(tails))]), self.g.n)

    def two_targets(self, length: int) -> list[_Snake] | None:
        """One try of the original's two_snakes; None when it fails."""
        g, rng = self.g, self.rng
        for _ in range(MAX_PADDLE_RETRIAL + 1):
            degrees = int(rng.integers(-180, 180))
            tails = g.first_tails(degrees)
            if not len(tails):
                return None
            first = self._seed(self._draw_tail(tails), degrees)
            if first is not None:
                break
        else:
            return None
        sd = g.p.seed_distance
        for _ in range(MAX_PADDLE_RETRIAL + 1):
            degrees = int(rng.integers(-180, 180))
            phi = int(rng.integers(0, 360)) * np.pi / 180
            s, c = _sin_cos(phi)
            tail = (int(np.round(first.tail[0] + sd * s)), int(np.round(first.tail[1] + sd * c)))
            second = self._seed(tail, degrees)
            if second is not None:
                break
        else:
            return None
        self.occ = g.border.copy()  # each try starts afresh (the seeds do not look at it)
        snakes = [first, second]
        for _ in range(length - 1):
            for snake in snakes:
                if not self.extend(snake):
                    return None
        self._commit(second.pending)  # the original commits the second target's last only
        return snakes

    def distractor(self, length: int) -> _Snake | None:
        """One attempt of the original's make_snake; None (occupancy unchanged) on failure."""
        saved = self.occ.copy()
        snake = self._distractor_seed()
        if snake is None:
            return None
        for _ in range(length - 1):
            if not self.extend(snake):
                self.occ = saved
                return None
        self._commit(snake.pending)
        return snake

    def _distractor_seed(self) -> _Snake | None:
        g, rng = self.g, self.rng
        for _ in range(MAX_PADDLE_RETRIAL + 1):
            degrees = int(rng.integers(-180, 180))
            occ = g.view(self.occ)
            free = np.count_nonzero(occ <= FREE_AT_MOST)
            if float(free) / (g.n * g.n) < STOP_WITH_AVAILABILITY:
                return None
            blocked = occ > FREE_AT_MOST
            blocked[0, :], blocked[-1, :], blocked[:, 0], blocked[:, -1] = True, True, True, True
            tails = g.free_tails(blocked, degrees)
            if not len(tails):
                return None
            snake = self._seed(self._draw_tail(tails), degrees)
            if snake is not None:
                return snake
        return None

    def extend(self, snake: _Snake) -> bool:
        """The original's extend_snake: one more paddle, or False."""
        g, occ = self.g, self.occ
        py, px = _translate(snake.pivot[0], snake.pivot[1], snake.theta,
                            g.p.paddle_length + 2 * g.margin)
        base = g.flat(py, px)
        weights = g.weights(snake.theta)
        if g.reach <= py < g.n - g.reach and g.reach <= px < g.n - g.reach:
            inside, discs = g.every_candidate, g.circle_discs  # the whole circle is inside
        else:
            cy, cx = py + g.circle_dy, px + g.circle_dx
            inside = ((cy >= 0) & (cy < g.n) & (cx >= 0) & (cx < g.n)).nonzero()[0]
            if not len(inside):
                return False
            discs, weights = g.circle_discs[inside], weights[inside]
        near = occ[base + discs].max(1)  # cv2.dilate by the disc, at the candidates
        pmf = (1 - near) * weights
        total = pmf.sum()
        if total < DEAD_END_BELOW:
            return False
        cmf = (pmf / total).cumsum()
        for _ in range(MAX_PADDLE_RETRIAL + 1):
            c = int(inside[(cmf - self.rng.random() > 0).argmax()])
            paddle = g.grown_paddle(c)
            anchor = base + int(g.circle_heads[c])
            if (occ[anchor + paddle.mask_offs] + paddle.mask_vals).max() < OVERLAP_AT:
                break
        else:
            return False
        self._commit(snake.pending)
        snake.pending = (anchor, paddle)
        snake.paddles.append(snake.pending)
        snake.pivots.append((py, px))
        snake.pivot, snake.theta = (py, px), g.circle_theta[c]
        snake.head = (py + int(g.circle_dy[c]), px + int(g.circle_dx[c]))
        return True


def _polyline(g: _Layout, snake: _Snake) -> list[tuple[float, float]]:
    """The centre line of a snake: start, seed end, then pivot, near end and far end of every
    grown paddle (through the gaps)."""
    L = g.p.paddle_length
    (ty, tx), (_, seed) = snake.tail, snake.paddles[0]
    s, c = _sin_cos(seed.theta)
    out = [(float(ty), float(tx)), (ty + L * s, tx + L * c)]
    for (anchor, paddle), (py, px) in zip(snake.paddles[1:], snake.pivots):
        hy, hx = divmod(anchor, g.w)
        hy, hx = hy - g.pad, hx - g.pad
        s, c = _sin_cos(paddle.theta)
        out += [(float(py), float(px)), (hy + L * s, hx + L * c), (float(hy), float(hx))]
    return out


def generate_image(params: ResolutionParams, contour_length: int, rng,
                   return_trace: bool = False):
    """One image: (uint8 [res, res], label, paddle margin[, trace]).

    rng: a numpy Generator (`image_rng`) or RandomState (the original's draws); only its
    integers(low, high) -- randint for a RandomState -- and random() are used.

    trace (for tests and the fidelity check): {'targets': [polyline, polyline],
    'distractors': [polyline, ...], 'markers': [(y, x), (y, x)], 'marked': (target of marker 0,
    target of marker 1)}; a polyline is a snake's centre line through paddles and gaps.
    """
    integers = rng.randint if isinstance(rng, np.random.RandomState) else rng.integers
    draws = _Draws(integers, rng.random)
    label = int(draws.integers(0, 2))
    margin = params.paddle_margins[int(draws.integers(0, len(params.paddle_margins)))]
    g = _layout(params, margin)
    builder = _ImageBuilder(g, draws)
    targets = None
    while targets is None:
        targets = builder.two_targets(contour_length)
    distractors = []
    for _ in range(num_distractors(params, contour_length)):
        for _ in range(MAX_DISTRACTOR_RETRIAL + 1):
            snake = builder.distractor(distractor_length(contour_length))
            if snake is not None:
                distractors.append(snake)
                break
    origin = int(draws.integers(0, 2))
    terminal = origin if label == 1 else 1 - origin
    markers = [targets[origin].tail, targets[terminal].head]

    img = np.zeros(g.w * g.w)
    for snakes, contrast in ((targets, params.paddle_contrast * params.snake_contrast),
                             (distractors, params.snake_contrast)):
        for snake in snakes:
            for anchor, paddle in snake.paddles:
                idx = anchor + paddle.ink_offs
                img[idx] = np.maximum(img[idx], raster.stamp_values(paddle.ink, contrast))
    out = raster.finish(g.view(img), markers, params.marker_radius, params.antialias_scale)
    if not return_trace:
        return out, label, margin
    trace = {"targets": [_polyline(g, s) for s in targets],
             "distractors": [_polyline(g, s) for s in distractors],
             "markers": markers, "marked": (origin, terminal)}
    return out, label, margin, trace


def image_rng(seed: int, resolution: int, contour_length: int, number: int) -> np.random.Generator:
    """The generator of image `number` (counting over all batches) of a data set."""
    return np.random.default_rng([int(seed), int(resolution), int(contour_length), int(number)])
