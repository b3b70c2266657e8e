"""Writes Pathfinder / Path-X data sets in the LRA release layout: seeded, parallel, resumable.

Output: <out>/<level_dir>/imgs/<batch>/sample_<i>.png (8-bit grey) and
<out>/<level_dir>/metadata/<batch>.npy, which -- as in the release -- is a text file with one
line per image:

    imgs/<batch> sample_<i>.png <i> <label> <continuity> <contour_length> <distractor_length>
        <paddle_length> <paddle_thickness> <paddle_margin> <number of paddle contrasts>

(one line, space-separated; e.g. `imgs/0 sample_0.png 0 1 1.0 14 4 2 0.5 1 1`). <i> counts
from 0 within each batch. Image number g = batch * batch_size + i is drawn from the seed
sequence (seed, resolution, contour_length, g), so a seed gives the same images whatever the
batch size or number of workers. <out>/<level_dir>/generator.json records the parameters (and
the format version: a folder written by another version is refused, not mixed).

Resumable: a batch counts as done when its metadata file exists, has one line per image and
every image it lists exists. Images are written first and the metadata last (to a temporary
name, then renamed), so a killed run never leaves a batch that looks done; re-running the same
call regenerates only the batches that are not.

Workers are processes: forked when this process has not loaded JAX, spawned otherwise (a fork
of a process running JAX's threads is unsafe); either way they import only this package.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any

from PIL import Image

from luna_lra.data.pathfinder.generator import (LEVEL_DIRS, LEVELS, PARAMS, RESOLUTIONS,
                                                ResolutionParams, distractor_length,
                                                generate_image, image_rng)

NUM_PADDLE_CONTRASTS = 1  # the metadata's last field: len(paddle_contrast_list)
DEFAULT_BATCH_SIZE = 1000
PARAMS_FILE = "generator.json"
# 3: the original generator's process, its OpenCV border and commit rules included (2: pixels
# rendered as the original renders them; 1: analytic antialiasing)
FORMAT_VERSION = 3


def metadata_line(batch: int, index: int, label: int, params: ResolutionParams,
                  contour_length: int, margin: int) -> str:
    """One metadata line of the release format (without the newline)."""
    fields = [f"imgs/{batch}", f"sample_{index}.png", index, label, params.continuity,
              contour_length, distractor_length(contour_length), params.paddle_length,
              params.paddle_thickness, margin, NUM_PADDLE_CONTRASTS]
    return " ".join(str(f) for f in fields)


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


def mp_context():
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
    root = os.path.join(out, LEVEL_DIRS[level])
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
        bar = tqdm(total=n_todo, unit="img", desc=f"pathfinder{resolution}/{LEVEL_DIRS[level]}",
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
            with mp_context().Pool(min(workers, len(tasks))) as pool:
                for result in pool.imap_unordered(_generate_chunk, tasks):
                    finish(result)
    finally:
        if bar is not None:
            bar.close()
    return {"root": root, "generated_batches": todo,
            "skipped_batches": [b for b in range(len(sizes)) if b not in todo],
            "generated_images": n_todo, "seconds": time.time() - t0}
