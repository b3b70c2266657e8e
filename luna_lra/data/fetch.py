"""Fetching the data of every LRA task into the folders the configs read (`data/<task>...`).

ListOps, Retrieval, Pathfinder and Path-X come from the LRA release, lra_release.gz (linked
from google-research/long-range-arena's README; a gzipped tar despite its name). Its members
sit under `lra_release/` (the LRA repository's dataset_setup.sh moves them out of
`lra_release/lra_release/` after `tar xvf`, so both prefixes are accepted):

    listops-1000/basic_{train,val,test}.tsv                     -> <out>/listops/listops-1000/
    tsv_data/new_aan_pairs.{train,eval,test}.tsv                -> <out>/retrieval/tsv_data/
    pathfinder{32,64,128,256}/<level>/{metadata/<b>.npy, imgs/<b>/sample_<i>.png}
        with <level> curv_baseline, curv_contour_length_9, curv_contour_length_14
                                                                -> <out>/pathfinder<R>/<level>/

Only those members are written (pathfinder64/256 only when asked for); everything else is
counted and reported. Each folder above is a *unit*: it is written as `<unit>.partial`,
checked (per-split counts against the known ones, or "present and readable" where no count is
documented), recorded in `<out>/fetch_manifest.json` and then renamed into place, so a killed
unpack leaves no half folder where a reader looks, and a rerun redoes only the missing units.
The archive is read once, as a stream; its sha256 and md5 are computed on the way and checked
against --sha256, the md5 the server announced (Google Cloud Storage's x-goog-hash) and the
manifest's record of an earlier fetch. Text (IMDB) and Image (CIFAR-10) are prepared through
TFDS where TFDS can; where it cannot, the outcome says so and names the offline command.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import types
from collections import Counter
from typing import Callable, IO

from luna_lra.data import DataError, image, listops, pathfinder, retrieval, text, tfds_source
from luna_lra.data.download import CHUNK, ArchiveStream, FetchError, download, safe_relpath

log = logging.getLogger(__name__)

LRA_RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
ARCHIVE_NAME = "lra_release.gz"
MANIFEST_NAME = "fetch_manifest.json"
RELEASE_PREFIX = "lra_release"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Examples per split of the release where a published figure exists (the others are checked
# as present and readable, and their counts reported):
# - ListOps: the defaults of LRA's generator that made the files (lra_benchmarks/data/
#   listops.py: num_train_samples=96000, num_valid_samples=2000, num_test_samples=2000).
# - Retrieval: the S5 paper's LRA appendix (Smith et al., ICLR 2023, arXiv:2208.04933):
#   147,086 training, 18,090 validation and 17,437 test pairs.
# - Pathfinder 32 x 32 hard: 200,000 images, the S5 appendix's 160,000 / 20,000 / 20,000.
KNOWN_COUNTS: dict[str, dict[str, int]] = {
    "listops-1000": {"train": 96_000, "val": 2_000, "test": 2_000},
    "tsv_data": {"train": 147_086, "val": 18_090, "test": 17_437},
    "pathfinder32/curv_contour_length_14": {"images": 200_000},
}
# An empty PNG the S4 and S5 Pathfinder loaders skip ("There's an empty file in the dataset":
# PathFinderDataset.blacklist in state-spaces/s4 and lindermanlab/S5 src|s5/dataloaders/lra.py).
KNOWN_BAD_IMAGES = {"pathfinder32/curv_baseline/imgs/0/sample_172.png"}


@dataclasses.dataclass(frozen=True)
class Unit:
    """One folder of the release, unpacked as a whole and renamed into place when checked."""

    source: str  # its path in the release under lra_release/, e.g. 'pathfinder32/curv_baseline'
    dest: str  # where it goes under the output folder
    keep: re.Pattern  # the files wanted, as paths relative to the folder
    verify: Callable[[str, "Unit", list[str]], dict]  # (folder, unit, bad PNGs) -> counts


@dataclasses.dataclass(frozen=True)
class Outcome:
    task: str
    ready: bool
    message: str  # one line


# ----------------------------------------------------------------------------- checks


def _check_count(where: str, unit: Unit, split: str, n: int) -> None:
    want = KNOWN_COUNTS.get(unit.source, {}).get(split)
    if want is not None and n != want:
        raise FetchError(f"{where}: {n} examples in {split}; the LRA release's {unit.source} has "
                         f"{want}: this is not the release's file, or it is damaged")


def _verify_listops(folder: str, unit: Unit, bad: list[str]) -> dict:
    counts = {}
    for split, path in listops.split_paths(folder).items():
        _, labels = listops.read_tsv(path)
        _check_count(path, unit, split, len(labels))
        counts[split] = len(labels)
    return counts


def _verify_retrieval(folder: str, unit: Unit, bad: list[str]) -> dict:
    counts = {}
    for split, path in retrieval.split_paths(folder).items():
        _, _, targets, _ = retrieval.read_tsv(path, max_length=1)
        _check_count(path, unit, split, len(targets))
        counts[split] = len(targets)
    return counts


def _verify_pathfinder(folder: str, unit: Unit, bad: list[str]) -> dict:
    """Every image the metadata lists is there and starts like a PNG (the known empty one
    excepted, and reported); the number listed matches the known one where there is one."""
    entries = [e for meta in pathfinder.metadata_files(folder)
               for e in pathfinder.read_metadata(meta, folder)]
    _check_count(os.path.join(folder, "metadata"), unit, "images", len(entries))
    bad_paths = {os.path.join(folder, *rel.split("/")): rel for rel in bad}
    known, unknown = [], []
    for path, _, _ in entries:
        if path in bad_paths or not os.path.isfile(path):
            rel = bad_paths.get(path) or os.path.relpath(path, folder).replace(os.sep, "/")
            (known if f"{unit.source}/{rel}" in KNOWN_BAD_IMAGES else unknown).append(rel)
    if unknown:
        path = os.path.join(folder, *unknown[0].split("/"))
        what = "not a PNG" if os.path.isfile(path) else "missing"
        raise FetchError(f"{path}: listed in the metadata but {what} ({len(unknown)} such "
                         f"images in {unit.source})")
    n = len(entries)
    a, b = pathfinder.split_bounds(n)
    return {"images": n, "train": a, "val": b - a, "test": n - b, "known_bad_images": known}


_PATHFINDER_FILES = re.compile(r"metadata/[^/.][^/]*\.npy|imgs/[^/.][^/]*/[^/.][^/]*\.png")


def _pathfinder_units(resolution: int) -> tuple[Unit, ...]:
    return tuple(Unit(f"pathfinder{resolution}/{level}", f"pathfinder{resolution}/{level}",
                      _PATHFINDER_FILES, _verify_pathfinder)
                 for level in pathfinder.LEVEL_DIRS.values())


RELEASE_TASKS: dict[str, tuple[Unit, ...]] = {
    "listops": (Unit("listops-1000", "listops/listops-1000",
                     re.compile(r"basic_(train|val|test)\.tsv"), _verify_listops),),
    "retrieval": (Unit("tsv_data", "retrieval/tsv_data",
                       re.compile(r"new_aan_pairs\.(train|eval|test)\.tsv"), _verify_retrieval),),
    "pathfinder32": _pathfinder_units(32),
    "pathx": _pathfinder_units(128),
    "pathfinder64": _pathfinder_units(64),
    "pathfinder256": _pathfinder_units(256),
}
TFDS_TASKS = {"text": "imdb_reviews", "image": "cifar10"}
TASKS = tuple(RELEASE_TASKS) + tuple(TFDS_TASKS)
DEFAULT_TASKS = ("listops", "text", "retrieval", "image", "pathfinder32", "pathx")


def release_path(name: str) -> tuple[str, str] | None:
    """(unit source, path inside it) of an archive member such as
    'lra_release/lra_release/pathfinder32/curv_baseline/imgs/0/sample_1.png' (any number of
    lra_release/ in front), or None for a member with too few parts."""
    parts = name.split("/")
    i = 0
    while i < len(parts) and parts[i] == RELEASE_PREFIX:
        i += 1
    depth = 2 if parts[i:] and parts[i].startswith("pathfinder") else 1
    if len(parts) - i <= depth:
        return None
    return "/".join(parts[i:i + depth]), "/".join(parts[i + depth:])


def member_target(unit: Unit, name: str) -> str | None:
    """The path of archive member `name` inside `unit`'s folder, or None if not wanted."""
    found = release_path(name)
    if found is None or found[0] != unit.source or not unit.keep.fullmatch(found[1]):
        return None
    return found[1]


# ----------------------------------------------------------------------------- manifest


class Manifest:
    """<out>/fetch_manifest.json: the archive read ({file, url, size, sha256, md5_base64}) and
    each unit put in place ({task, files, bytes, counts, archive_sha256})."""

    def __init__(self, out: str):
        self.out = out
        self.path = os.path.join(out, MANIFEST_NAME)
        self.data: dict = {"format": 1, "archive": None, "units": {}}
        if os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    data = json.load(f)
                if not isinstance(data, dict) or not isinstance(data.get("units"), dict):
                    raise ValueError("expected an object with 'units'")
            except (OSError, ValueError) as e:
                raise FetchError(f"{self.path}: unreadable manifest ({e}); delete it to fetch "
                                 f"again") from None
            self.data.update(data)

    def save(self) -> None:
        os.makedirs(self.out, exist_ok=True)
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.replace(self.path + ".tmp", self.path)

    def unit_done(self, unit: Unit) -> bool:
        """Whether the unit is in place. Finishes a rename a kill interrupted (the manifest is
        written before the rename); refuses a folder in the way that the fetch did not write."""
        dest = os.path.join(self.out, unit.dest)
        if unit.dest in self.data["units"]:
            if not os.path.isdir(dest) and os.path.isdir(dest + ".partial"):
                os.replace(dest + ".partial", dest)
            if os.path.isdir(dest):
                return True
            del self.data["units"][unit.dest]
        elif os.path.exists(dest):
            raise FetchError(f"{dest}: already there, but not fetched from the release (it is "
                             f"not in {self.path}); move it away, or fetch into another --out")
        return False


# ----------------------------------------------------------------------------- unpacking


class _Writer:
    """Writes the wanted members into each unit's .partial folder and counts what it skips."""

    def __init__(self, out: str, units: list[Unit], archive: str):
        self.archive = archive
        self.units = {u.source: u for u in units}
        self.folders = {u.source: os.path.join(out, u.dest) + ".partial" for u in units}
        self.stats = {u.source: {"files": 0, "bytes": 0, "bad": []} for u in units}
        self.skipped: Counter = Counter()
        self._made: set[str] = set()
        for folder in self.folders.values():
            shutil.rmtree(folder, ignore_errors=True)  # a killed run's leftovers: start afresh
            os.makedirs(folder)

    def add(self, name: str, src: IO[bytes]) -> None:
        found = release_path(name)
        unit = self.units.get(found[0]) if found else None
        if unit is None or not unit.keep.fullmatch(found[1]):
            top = [p for p in name.split("/") if p != RELEASE_PREFIX][:1] or [name]
            self.skipped[top[0]] += 1
            return
        rel = safe_relpath(found[1], self.archive)
        path = os.path.join(self.folders[unit.source], *rel.split("/"))
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        try:
            f = open(path, "xb")
        except FileExistsError:
            raise FetchError(f"{self.archive}: {unit.source}/{rel} is in the archive twice "
                             f"(once more as {name})") from None
        with f:
            first = src.read(CHUNK)
            f.write(first)
            size = len(first)
            while chunk := src.read(CHUNK):
                f.write(chunk)
                size += len(chunk)
        stats = self.stats[unit.source]
        stats["files"] += 1
        stats["bytes"] += size
        if rel.endswith(".png") and not first.startswith(PNG_SIGNATURE):
            stats["bad"].append(rel)

    def discard(self) -> None:
        for folder in self.folders.values():
            shutil.rmtree(folder, ignore_errors=True)
            try:
                os.rmdir(os.path.dirname(folder))  # the task folder, if this left it empty
            except OSError:
                pass


def unpack(archive: str, out: str, units: list[Unit], progress: bool = False):
    """One pass over the archive writing every unit's files into <out>/<dest>.partial.
    Returns (the archive's digests, the writer with per-unit stats and skipped members)."""
    writer = _Writer(out, units, archive)
    log.info("reading %s for %s (the whole archive is read once)", archive,
             ", ".join(u.source for u in units))
    try:
        with ArchiveStream(archive, progress) as stream:
            for name, src in stream.members():
                writer.add(name, src)
            digests = stream.finish()
    except BaseException:
        writer.discard()
        raise
    return digests, writer


# ----------------------------------------------------------------------------- the release


def _archive(out: str, archive: str | None, url: str, manifest: Manifest, retries: int,
             retry_wait: float, progress: bool) -> tuple[str, dict]:
    """(path of the archive to read, digests it must have: sha256 / md5_base64 when known)."""
    if archive:
        return archive, {}
    dest = os.path.join(out, ARCHIVE_NAME)
    before = manifest.data.get("archive") or {}
    got = download(url, dest, retries=retries, retry_wait=retry_wait, progress=progress)
    same = before.get("file") == ARCHIVE_NAME and before.get("size") == got["size"]
    expect = {"md5_base64": got["md5_base64"] or (before.get("md5_base64") if same else None),
              "sha256": before.get("sha256") if same else None}
    manifest.data["archive"] = {"file": ARCHIVE_NAME, "url": url, "size": got["size"],
                                "md5_base64": expect["md5_base64"], "sha256": expect["sha256"]}
    manifest.save()
    return dest, expect


def _check_digests(path: str, digests: dict, expect: dict, sha256: str | None,
                   downloaded: bool) -> None:
    if sha256 and digests["sha256"] != sha256.lower():
        raise FetchError(f"{path}: sha256 {digests['sha256']}, expected {sha256.lower()} "
                         f"(--sha256)")
    if expect.get("sha256") and digests["sha256"] != expect["sha256"]:
        raise FetchError(f"{path}: sha256 {digests['sha256']} differs from "
                         f"{expect['sha256']}, recorded when it was fetched; the file changed "
                         f"on disk: delete it and run again")
    if expect.get("md5_base64") and digests["md5_base64"] != expect["md5_base64"]:
        if downloaded:
            os.unlink(path)  # provably corrupt: the next run downloads it afresh
        raise FetchError(f"{path}: md5 {digests['md5_base64']} differs from the server's "
                         f"{expect['md5_base64']} (x-goog-hash): the download is corrupt"
                         f"{'; removed it, run again to download it afresh' if downloaded else ''}")


def _place(out: str, unit: Unit, task: str, writer: _Writer, manifest: Manifest,
           sha256: str) -> dict:
    """Checks a unit's .partial folder, records it in the manifest, then renames it."""
    folder = writer.folders[unit.source]
    stats = writer.stats[unit.source]
    if not stats["files"]:
        raise FetchError(f"{writer.archive}: no {RELEASE_PREFIX}/{unit.source}/ files in the "
                         f"archive; expected the LRA release")
    try:
        counts = unit.verify(folder, unit, stats["bad"])
    except DataError as e:
        raise FetchError(str(e)) from None
    manifest.data["units"][unit.dest] = {"task": task, "files": stats["files"],
                                         "bytes": stats["bytes"], "counts": counts,
                                         "archive_sha256": sha256}
    manifest.save()
    os.replace(folder, os.path.join(out, unit.dest))
    return counts


def _describe(task: str, out: str, manifest: Manifest, note: str = "") -> str:
    parts = []
    for unit in RELEASE_TASKS[task]:
        counts = manifest.data["units"][unit.dest]["counts"]
        shown = ", ".join(f"{k} {v:,}" for k, v in counts.items() if isinstance(v, int))
        bad = counts.get("known_bad_images")
        if bad:
            shown += (f"; {len(bad)} known empty image ({', '.join(bad)}): read this level with "
                      f"data.skip_bad_images=True, as LRA's pipeline drops it")
        parts.append(f"{os.path.join(out, unit.dest)} ({shown})")
    return f"{task}: ready{note}: " + "; ".join(parts)


def _fetch_units(out: str, todo: dict[str, list[Unit]], manifest: Manifest, *, url: str,
                 archive: str | None, sha256: str | None, retries: int, retry_wait: float,
                 progress: bool) -> dict[str, Outcome]:
    path, expect = _archive(out, archive, url, manifest, retries, retry_wait, progress)
    digests, writer = unpack(path, out, [u for units in todo.values() for u in units], progress)
    try:
        _check_digests(path, digests, expect, sha256, downloaded=not archive)
    except FetchError:
        writer.discard()
        raise
    manifest.data["archive"] = {**(manifest.data.get("archive") or {}), **digests,
                                "file": os.path.abspath(archive) if archive else ARCHIVE_NAME}
    manifest.save()
    if writer.skipped:
        log.info("left out, not needed: %s", ", ".join(
            f"{top} ({n:,} files)" for top, n in sorted(writer.skipped.items())))
    outcomes = {}
    for task, units in todo.items():
        problem = None
        for unit in units:
            try:
                _place(out, unit, task, writer, manifest, digests["sha256"])
            except FetchError as e:
                problem = problem or (f"{task}: {e} (files left in "
                                      f"{writer.folders[unit.source]}; the next run redoes it)")
        outcomes[task] = Outcome(task, problem is None,
                                 problem or _describe(task, out, manifest))
    return outcomes


def fetch_release(out: str, tasks: list[str], *, url: str = LRA_RELEASE_URL,
                  archive: str | None = None, sha256: str | None = None, retries: int = 5,
                  retry_wait: float = 2.0, progress: bool = True) -> list[Outcome]:
    """Puts the release's units of `tasks` (keys of RELEASE_TASKS) in place under out,
    downloading url to <out>/lra_release.gz unless `archive` names a copy; units already in
    place (per the manifest) are left alone, and with all of them there nothing is read."""
    try:
        manifest = Manifest(out)
    except FetchError as e:
        return [Outcome(t, False, f"{t}: {e}") for t in tasks]
    outcomes: dict[str, Outcome] = {}
    todo: dict[str, list[Unit]] = {}
    for task in tasks:
        try:
            pending = [u for u in RELEASE_TASKS[task] if not manifest.unit_done(u)]
        except FetchError as e:
            outcomes[task] = Outcome(task, False, f"{task}: {e}")
            continue
        if pending:
            todo[task] = pending
        else:
            outcomes[task] = Outcome(task, True, _describe(task, out, manifest, " (already)"))
    if todo:
        try:
            outcomes.update(_fetch_units(out, todo, manifest, url=url, archive=archive,
                                         sha256=sha256, retries=retries,
                                         retry_wait=retry_wait, progress=progress))
        except FetchError as e:
            outcomes.update({t: Outcome(t, False, f"{t}: {e}") for t in todo})
    return [outcomes[t] for t in tasks]


def fetch_tfds(task: str, out: str) -> Outcome:
    """Text or Image: nothing if <out>/<task> holds data its reader finds; else TFDS's
    download_and_prepare (array_record) there, or a line saying why TFDS cannot."""
    module = text if task == "text" else image
    folder = os.path.join(out, task)
    offline = (f"python -m data_prep.text --source aclimdb --out {folder}" if task == "text"
               else f"python -m data_prep.image --out {folder}")
    try:
        source, _ = module.resolve_source(types.SimpleNamespace(data_dir=folder, source="auto"))
        return Outcome(task, True, f"{task}: ready (already): {folder} ({source})")
    except DataError:
        pass
    name = TFDS_TASKS[task]
    # TFDS's cifar10 builder reads with tf.io.gfile and encodes its images with
    # tf.image.encode_png; imdb_reviews needs no TensorFlow.
    if name == "cifar10" and not tfds_source.has_tensorflow():
        return Outcome(task, False, f"{task}: TFDS needs TensorFlow to prepare {name}, and it is "
                                    f"not installed; without it: {offline}")
    log.info("%s: preparing TFDS %s in %s", task, name, folder)
    try:
        written = tfds_source.prepare_tfds(name, folder)
    except Exception as e:  # noqa: BLE001 - TFDS fails in many ways offline; report, go on
        first = (str(e).splitlines() or [""])[0][:200]
        return Outcome(task, False, f"{task}: TFDS could not prepare {name} "
                                    f"({type(e).__name__}: {first}); without TFDS: {offline}")
    return Outcome(task, True, f"{task}: ready: {written} (TFDS {name})")


def fetch(out: str, tasks: list[str], **release_options) -> list[Outcome]:
    """Every task of `tasks` (see TASKS), in that order: the release's, then TFDS's."""
    release = [t for t in tasks if t in RELEASE_TASKS]
    outcomes = {o.task: o for o in fetch_release(out, release, **release_options)} if release \
        else {}
    for task in tasks:
        if task in TFDS_TASKS:
            outcomes[task] = fetch_tfds(task, out)
    return [outcomes[t] for t in tasks]
