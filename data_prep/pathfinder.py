"""Pathfinder / Path-X data: generate a set, check one, or compare two (a thin command over
luna_lra.data.pathfinder: `writer` generates, `reader` reads and checks, `fidelity` compares
and runs the original generator).

    python -m data_prep.pathfinder --out DIR --resolution {32,64,128,256}
        --level {easy,intermediate,hard} --num_images N [--batch_size 1000 --workers K --seed S]
        [--original ORIGINAL_DIR]
    python -m data_prep.pathfinder --check DIR --resolution R
    python -m data_prep.pathfinder --compare DIR_A DIR_B [--compare DIR_C DIR_D ...]
        [--num_images 1000 --level hard --folds 5 --report results/pathfinder_fidelity]
    python -m data_prep.pathfinder --replay ORIGINAL_DIR --resolution R --level L
        --num_images N [--seed S]

--out writes the LRA release layout (<out>/<level_dir>/imgs/<batch>/sample_<i>.png and
metadata/<batch>.npy) and resumes an interrupted run; with --original the original generator
(ORIGINAL_DIR: snakes.py and snakes2.py of drewlinsley/pathfinder at commit ab9c130, run with
OpenCV and LRA's parameters: see luna_lra.data.pathfinder.fidelity) writes a reference set
instead. --check decodes every listed image the way training does and exits non-zero, with one
line per kind of problem naming the first bad file, if any image is missing, empty, truncated,
unreadable or of the wrong size. --compare prints (and with --report writes as PREFIX.md /
PREFIX.json) the statistics of two image sets and the two-sample classifiers' accuracies, and
exits non-zero if a bar is not met. --replay runs the original and our generator on the same
random draws and exits non-zero unless every image is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from typing import Iterable

from luna_lra.data import DataError
from luna_lra.data.pathfinder import reader
from luna_lra.data.pathfinder.generator import LEVELS, RESOLUTIONS
from luna_lra.data.pathfinder.writer import DEFAULT_BATCH_SIZE, generate


def check(data_dir: str, resolution: int) -> int:
    """Prints, per level found under data_dir, the image count, labels, split sizes and every
    kind of bad image; 0 when at least one level was found and every image decodes."""
    found, bad = 0, False
    for level in LEVELS:
        try:
            level_dir = reader.find_level_dir(data_dir, resolution, level)
        except DataError:
            print(f"{level}: no {reader.level_dir_name(level)}/ under {data_dir}")
            continue
        try:
            report = reader.check_level(level_dir, resolution)
        except DataError as e:  # a missing metadata folder or a malformed line
            print(f"{level}: {e}")
            return 1
        n, (l0, l1) = report["images"], report["labels"]
        train_end, val_end = report["split"]
        print(f"{level} ({level_dir}): {n} images, label 0: {l0}, label 1: {l1}; "
              f"train/val/test {train_end}/{val_end - train_end}/{n - val_end}")
        for kind, (count, path, message, where) in report["problems"].items():
            print(f"  {count} {kind} image{'s' if count > 1 else ''}; first: {path}: {message} "
                  f"(listed in {where})")
            bad = True
        if not report["problems"]:
            print(f"  all {n} images decode as {resolution}x{resolution} grey")
        found += 1
    if not found:
        print(f"no Pathfinder levels in {data_dir}; make one with: python -m data_prep.pathfinder "
              f"--out {data_dir} --resolution {resolution} --level hard --num_images N")
    return 0 if found and not bad else 1


def _machine() -> str:
    import numpy
    import PIL
    import sklearn

    return (f"{platform.machine()} {platform.processor() or platform.system()}, "
            f"{os.cpu_count()} cores; Python {platform.python_version()}, numpy "
            f"{numpy.__version__}, Pillow {PIL.__version__}, scikit-learn {sklearn.__version__}")


def replay(original: str, resolution: int, level: str, num_images: int, seed: int) -> int:
    """The original and our generator on the same draws: 0 when every image is the same."""
    from luna_lra.data.pathfinder import fidelity

    result = fidelity.replay(original, resolution, level, num_images, seed)
    same = result["images"] - len(result["differ"])
    print(f"pathfinder{resolution} {level}, seed {seed}: {same} of {result['images']} images "
          f"the same (pixels, label, distractor snakes) as the original's on the same draws "
          f"(OpenCV {result['opencv']}; {result['distractors_per_image']:.2f} distractor snakes "
          f"per image)" + (f"; differ: {result['differ']}" if result["differ"] else ""))
    return 0 if not result["differ"] else 1


def compare(pairs: list[list[str]], num_images: int, level: str, folds: int,
            report: str | None, argv: list[str]) -> int:
    from luna_lra.data.pathfinder import fidelity
    from luna_lra.provenance import git_commit

    sections, results, ok = [], [], True
    for dir_a, dir_b in pairs:
        a = fidelity.load_images(dir_a, num_images, level)
        b = fidelity.load_images(dir_b, num_images, level)
        a, b = a[:len(b)], b[:len(a)]  # as many of each
        counts = (fidelity.distractor_counts(dir_a, a, level),
                  fidelity.distractor_counts(dir_b, b, level))
        result = fidelity.compare(a, b, folds=folds, distractors=counts)
        title = f"{a.shape[1]} px: {os.path.basename(os.path.normpath(dir_a))} vs " \
                f"{os.path.basename(os.path.normpath(dir_b))}"
        sections.append(fidelity.markdown_section(title, dir_a, dir_b, result))
        results.append({"a": dir_a, "b": dir_b, **result})
        ok = ok and all(bar["passed"] for bar in result["bars"].values())
    print("\n".join(sections))
    if report:
        commit = git_commit()
        command = "python -m data_prep.pathfinder " + shlex.join(argv)
        code = (f"uncommitted changes on top of {commit[:-len('-dirty')]}"
                if commit.endswith("-dirty") else commit)
        head = ["# Pathfinder fidelity: two-sample checks", "",
                f"Command: `{command}`", f"Commit: {code}", f"Machine: {_machine()}", ""]
        with open(report + ".md", "w") as f:
            f.write("\n".join(head) + "\n" + "\n".join(sections))
        with open(report + ".json", "w") as f:
            json.dump({"command": command, "commit": commit, "machine": _machine(),
                       "comparisons": results}, f, indent=1)
            f.write("\n")
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.pathfinder",
        description="Generate Pathfinder / Path-X images in the LRA release layout "
                    "(<out>/<level_dir>/imgs/<batch>/sample_<i>.png, metadata/<batch>.npy), "
                    "check such a folder, compare two image sets, or run the original "
                    "generator beside ours.")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="output folder (e.g. data/pathfinder32)")
    what.add_argument("--check", metavar="DIR",
                      help="decode every image DIR lists, report images per level, labels and "
                           "LRA's 80/10/10 split, and exit non-zero on any bad image")
    what.add_argument("--compare", nargs=2, action="append", metavar=("DIR_A", "DIR_B"),
                      help="two-sample fidelity check of two image sets (a level folder, a "
                           "folder holding one, or any folder of PNGs); may be repeated")
    what.add_argument("--replay", metavar="ORIGINAL_DIR",
                      help="run the original generator (snakes.py, snakes2.py of "
                           "drewlinsley/pathfinder at ab9c130) and ours on the same random draws "
                           "and compare the images; exit non-zero if any differs")
    ap.add_argument("--resolution", type=int, choices=RESOLUTIONS,
                    help="required with --out and --check")
    ap.add_argument("--level", choices=list(LEVELS),
                    help="easy=curv_baseline, intermediate=curv_contour_length_9, "
                         "hard=curv_contour_length_14 (required with --out; --compare: the level "
                         "read from a folder holding several, default hard)")
    ap.add_argument("--num_images", type=int,
                    help="--out: how many (required); --compare: the first N of each set "
                         "(default 1000)")
    ap.add_argument("--original", metavar="ORIGINAL_DIR",
                    help="--out: make the set with the original generator from this folder "
                         "(a reference set; needs OpenCV: pip install -e '.[fidelity]')")
    ap.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_progress", action="store_true")
    ap.add_argument("--folds", type=int, default=5, help="--compare: cross-validation folds")
    ap.add_argument("--report", metavar="PREFIX",
                    help="--compare: also write PREFIX.md and PREFIX.json")
    return ap


def main(argv: Iterable[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        if args.compare:
            return compare(args.compare, args.num_images or 1000, args.level or "hard",
                           args.folds, args.report, argv)
        if args.resolution is None:
            ap.error("--out, --check and --replay need --resolution")
        if args.check:
            return check(args.check, args.resolution)
        if args.level is None or args.num_images is None:
            ap.error("--out and --replay need --level and --num_images")
        if args.replay:
            return replay(args.replay, args.resolution, args.level, args.num_images, args.seed)
        if args.original:
            from luna_lra.data.pathfinder import fidelity

            fidelity.build_reference(args.original, args.out, args.resolution, args.level,
                                     args.num_images, args.batch_size, args.seed, args.workers)
            print(f"{args.out}: the original generator made {args.num_images} images "
                  f"(reference.json says how)")
            return 0
        summary = generate(args.out, args.resolution, args.level, args.num_images,
                           batch_size=args.batch_size, workers=args.workers, seed=args.seed,
                           show_progress=not args.no_progress)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['root']}: generated {summary['generated_images']} images in "
          f"{len(summary['generated_batches'])} batches, {len(summary['skipped_batches'])} "
          f"batches already complete, {summary['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
