"""Pathfinder pixels made the way the original generator makes them (drewlinsley/pathfinder,
snakes.py draw_line_n_mask and binary_dilate_custom, snakes2.py draw_circle and the final save);
the code is our own.

The original pipeline, step by step, as reproduced here:

* A paddle is drawn with PIL at `antialias_scale` times the size, on a float ('F') canvas of
  (2 h aa + 1)^2 pixels, h = paddle_length + ceil(thickness) + margin: a line of width
  round(thickness * aa) from the centre to the centre moved paddle_length * aa along the
  paddle's orientation, each coordinate rounded up. scipy.misc.imresize then byte-scales the
  canvas (min..max to 0..255, here exactly 0 and 255), resamples it to (2 h + 1)^2 pixels with
  PIL's Lanczos filter, and the result is divided by 255 and multiplied by the paddle's
  contrast in float64, then stored in a float32 canvas. The stamp's centre sits on the
  paddle's start pixel.
* The paddle's occupancy mask: the 2x drawing dilated by a disc of radius margin * aa, resized
  the same way, divided by 255 (float32).
* cv2.dilate, which the original uses on its float64 occupancy, pads a floating-point image
  with -DBL_MAX beyond the border (OpenCV's morphologyDefaultBorderValue): an output pixel none
  of whose kernel taps lands inside the image is -DBL_MAX (`dilate` below).
* A marker is a disc of radius marker_radius * aa drawn on the whole image at aa times the
  size, centred at (aa y, aa x), byte-scaled to 0/255 and Lanczos-resized to the image size.
* Paddles and markers (uint8 / 255 in float64) are combined by maximum, and scipy.misc.imsave
  byte-scales the float image (its minimum, 0, to 0 and its maximum to 255, rounding half up).

Because the same PIL filter and the same byte scaling are used, a stamp here is the original
generator's stamp for that orientation, bit for bit (with the Pillow version installed).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def bytescale(data: np.ndarray) -> np.ndarray:
    """scipy.misc.bytescale with its defaults: uint8 passes unchanged; anything else is mapped
    linearly from [min, max] to [0, 255] and rounded half up (a constant array maps to 0)."""
    data = np.asarray(data)
    if data.dtype == np.uint8:
        return data
    lo, hi = data.min(), data.max()
    span = (hi - lo) or 1
    scaled = (data - lo) * (255.0 / span)
    return (scaled.clip(0, 255) + 0.5).astype(np.uint8)


def lanczos_resize(data: np.ndarray, size: int) -> np.ndarray:
    """scipy.misc.imresize(data, (size, size), interp='lanczos'): uint8 [size, size]."""
    image = Image.fromarray(bytescale(data))  # 2-D uint8: mode 'L'
    return np.asarray(image.resize((size, size), resample=Image.Resampling.LANCZOS))


def stamp_half_size(paddle_length: int, thickness: float, margin: int) -> int:
    """h: a paddle stamp is (2 h + 1)^2 pixels with the start pixel at its centre (h, h)."""
    return paddle_length + int(math.ceil(thickness)) + margin


def paddle_stamp(orientation: float, paddle_length: int, thickness: float, margin: int,
                 aa: int) -> np.ndarray:
    """uint8 [(2h+1), (2h+1)]: one paddle pointing along `orientation` (radians, y down) from
    the centre pixel, before its contrast is applied."""
    if round(thickness * aa) != thickness * aa:
        raise ValueError(f"paddle_thickness {thickness} * antialias_scale {aa} must be a whole "
                         f"number of pixels (the original refuses it too)")
    h = stamp_half_size(paddle_length, thickness, margin)
    centre = h * aa
    head_y = int(np.ceil(centre + float(paddle_length * aa) * np.sin(orientation)))
    head_x = int(np.ceil(centre + float(paddle_length * aa) * np.cos(orientation)))
    canvas = Image.new("F", (2 * h * aa + 1, 2 * h * aa + 1), "black")
    ImageDraw.Draw(canvas).line([(centre, centre), (head_x, head_y)], fill="white",
                                width=int(round(thickness * aa)))
    return lanczos_resize(np.asarray(canvas), 2 * h + 1)


def paddle_mask_stamp(orientation: float, paddle_length: int, thickness: float, margin: int,
                      aa: int) -> np.ndarray:
    """uint8 [(2h+1), (2h+1)]: the original's occupancy mask of that paddle: the drawing at aa x
    dilated by a disc of radius margin * aa, then Lanczos-resized the same way (uint8 input,
    so without byte scaling)."""
    h = stamp_half_size(paddle_length, thickness, margin)
    centre = h * aa
    head_y = int(np.ceil(centre + float(paddle_length * aa) * np.sin(orientation)))
    head_x = int(np.ceil(centre + float(paddle_length * aa) * np.cos(orientation)))
    canvas = Image.new("L", (2 * h * aa + 1, 2 * h * aa + 1), 0)
    ImageDraw.Draw(canvas).line([(centre, centre), (head_x, head_y)], fill=255,
                                width=int(round(thickness * aa)))
    return lanczos_resize(dilate_disc(np.asarray(canvas), margin * aa), 2 * h + 1)


def dilate_disc(image: np.ndarray, radius: int) -> np.ndarray:
    """cv2.dilate of a uint8 image with the original's disc kernel (x^2 + y^2 <= radius^2): the
    maximum over the disc around each pixel (OpenCV pads uint8 with 0: outside is ignored)."""
    out = image.copy()
    n_y, n_x = image.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius or (dy == 0 and dx == 0):
                continue
            dst = out[max(0, -dy):n_y - max(0, dy), max(0, -dx):n_x - max(0, dx)]
            src = image[max(0, dy):n_y - max(0, -dy), max(0, dx):n_x - max(0, -dx)]
            np.maximum(dst, src, out=dst)
    return out


def stamp_values(stamp: np.ndarray, contrast: float) -> np.ndarray:
    """The original's paddle intensities: uint8 / 255 times the contrast in float64, stored as
    float32 (its canvas is a PIL 'F' image); returned as float64 holding those values."""
    values = stamp.astype(np.float64) / 255
    if contrast != 1.0:
        values *= contrast
    return values.astype(np.float32).astype(np.float64)


BORDER_VALUE = -np.finfo(np.float64).max  # what cv2.dilate pads a float64 image with


def dilate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate(image, kernel) for a float64 image: the maximum of image[y + ky - ay,
    x + kx - ax] over the kernel's non-zero taps (ky, kx), anchor (ay, ax) at the kernel's
    centre, taps outside the image counting as -DBL_MAX (so a pixel with no tap inside the
    image is -DBL_MAX)."""
    n_y, n_x = image.shape
    ay, ax = kernel.shape[0] // 2, kernel.shape[1] // 2
    out = np.full(image.shape, BORDER_VALUE)
    for ky, kx in zip(*np.nonzero(kernel)):
        dy, dx = ky - ay, kx - ax
        dst = out[max(0, -dy):n_y - max(0, dy), max(0, -dx):n_x - max(0, dx)]
        src = image[max(0, dy):n_y - max(0, -dy), max(0, dx):n_x - max(0, -dx)]
        np.maximum(dst, src, out=dst)
    return out


def seed_kernel(orientation: float, paddle_length: int, thickness: float, margin: int,
                aa: int) -> np.ndarray:
    """uint8 [2 (L + m) + 1]^2: the original's seed kernel (seed_snake's `struct`): the paddle's
    mask drawn with its start one pixel down and right of the kernel's centre, cropped to the
    kernel, and cast to uint8, which keeps only the taps where the mask is exactly 1 (255)."""
    size = 2 * (paddle_length + margin) + 1
    start = paddle_length + margin + 1
    mask = paddle_mask_stamp(orientation, paddle_length, thickness, margin, aa)
    h = mask.shape[0] // 2
    padded = np.zeros((size + 2 * h, size + 2 * h), np.uint8)
    padded[start:start + 2 * h + 1, start:start + 2 * h + 1] = mask  # centre at h + start
    return (padded[h:h + size, h:h + size] == 255).astype(np.uint8)


def marker_image(resolution: int, centre: tuple[int, int], radius: float, aa: int) -> np.ndarray:
    """uint8 [resolution, resolution]: the original's draw_circle for a marker at `centre`."""
    n, (cy, cx) = resolution, centre
    y, x = np.ogrid[-cy * aa:(n - cy) * aa, -cx * aa:(n - cx) * aa]
    disc = (x * x + y * y <= (radius * aa) ** 2).astype(np.uint8) * np.uint8(255)
    return lanczos_resize(disc, n)


def finish(paddles: np.ndarray, markers: list[tuple[int, int]], radius: float,
           aa: int) -> np.ndarray:
    """uint8 image: the paddles (float64 [n, n], already at their contrasts) and the markers
    (uint8 / 255 in float64) combined by maximum, then byte-scaled as the original's imsave
    did."""
    n = paddles.shape[0]
    discs = np.zeros((n, n), np.uint8)
    for centre in markers:
        np.maximum(discs, marker_image(n, centre, radius, aa), out=discs)
    return bytescale(np.maximum(paddles, discs.astype(np.float64) / 255))
