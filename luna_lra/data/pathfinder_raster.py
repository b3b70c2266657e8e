"""Pathfinder pixels made the way the published generator makes them (drewlinsley/pathfinder,
snakes.py draw_line_n_mask, snakes2.py draw_circle and the final save); the code is our own.

The published pipeline, step by step, as reproduced here:

* A paddle is drawn with PIL at `antialias_scale` times the size, on a float ('F') canvas of
  (2 h aa + 1)^2 pixels, h = paddle_length + ceil(thickness) + margin: a line of width
  round(thickness * aa) from the centre to the centre moved paddle_length * aa along the
  paddle's orientation, each coordinate rounded up. scipy.misc.imresize then byte-scales the
  canvas (min..max to 0..255, here exactly 0 and 255), resamples it to (2 h + 1)^2 pixels with
  PIL's Lanczos filter, and the result is divided by 255 and multiplied by the paddle's
  contrast (float32). The stamp's centre sits on the paddle's start pixel.
* A marker is a disc of radius marker_radius * aa drawn on the whole image at aa times the
  size, centred at (aa y, aa x), byte-scaled to 0/255 and Lanczos-resized to the image size.
* Paddles and markers are combined by maximum, and scipy.misc.imsave byte-scales the float
  image (its minimum, 0, to 0 and its maximum to 255, rounding half up).

Because the same PIL filter and the same byte scaling are used, a stamp here is the published
generator's stamp for that orientation, bit for bit (with the PIL version installed).
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
                         f"number of pixels (the published generator refuses it too)")
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
    """uint8 [(2h+1), (2h+1)]: the published occupancy mask of that paddle: the drawing at aa x
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
    """cv2.dilate with the published disc kernel (x^2 + y^2 <= radius^2): the maximum over the
    disc around each pixel, pixels outside the image ignored."""
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
    """The published paddle intensities: uint8 / 255 times the contrast, in float32."""
    values = stamp.astype(np.float32) / 255.0
    if contrast != 1.0:
        values *= contrast
    return values


def marker_image(resolution: int, centre: tuple[int, int], radius: float, aa: int) -> np.ndarray:
    """uint8 [resolution, resolution]: the published draw_circle for a marker at `centre`."""
    n, (cy, cx) = resolution, centre
    y, x = np.ogrid[-cy * aa:(n - cy) * aa, -cx * aa:(n - cx) * aa]
    disc = (x * x + y * y <= (radius * aa) ** 2).astype(np.uint8) * np.uint8(255)
    return lanczos_resize(disc, n)


def finish(paddles: np.ndarray, markers: list[tuple[int, int]], radius: float,
           aa: int) -> np.ndarray:
    """uint8 image: the paddles (float, [n, n], already at their contrasts) and the markers
    combined by maximum, then byte-scaled as the published imsave did."""
    n = paddles.shape[0]
    discs = np.zeros((n, n), np.uint8)
    for centre in markers:
        np.maximum(discs, marker_image(n, centre, radius, aa), out=discs)
    marked = np.maximum(paddles.astype(np.float64), discs.astype(np.float32) / 255.0)
    return bytescale(marked)
