"""metrics.jsonl and TensorBoard events in the workdir, written by process 0 only."""

from __future__ import annotations

import contextlib
import json
import logging
import os

import jax
from etils import epath

log = logging.getLogger("luna_lra")


def read_lines(path) -> tuple[list[dict], int]:
    """(the rows of a metrics.jsonl, how many lines were unreadable). A run killed while
    writing leaves a torn last line; it is dropped, not fatal."""
    rows, bad = [], 0
    for line in epath.Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


class MetricsWriter:
    """Appends one JSON line per (step, split); on resume keeps the lines up to the step
    resumed from. A remote workdir (gs://...) has the file rewritten whole, since object
    stores cannot append."""

    def __init__(self, workdir: str, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.lines: list[str] = []
        self.tb = None
        if not self.enabled:
            return
        if self.path.exists():
            rows, bad = read_lines(self.path)
            if bad:
                log.warning("%s: dropped %d unreadable line(s) (a write cut short)", self.path,
                            bad)
            self.lines = [json.dumps(r) + "\n" for r in rows if r["step"] <= resume_step]
        self._rewrite()
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.fspath(epath.Path(workdir) / "tensorboard"))
        except ImportError:  # optional at run time
            log.warning("tensorboardX is not installed: no TensorBoard events are written")

    def _rewrite(self) -> None:
        tmp = self.path.parent / (self.path.name + ".tmp")
        try:
            tmp.write_text("".join(self.lines))
            tmp.replace(self.path)
        except OSError as e:  # a full disk: no temporary left, the path named
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(e.errno, e.strerror, os.fspath(self.path)) from None

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": step, "split": split, **metrics}) + "\n"
        self.lines.append(line)
        if "://" in os.fspath(self.path):
            self._rewrite()
            return
        try:
            with self.path.open("a") as f:
                f.write(line)
        except OSError as e:
            raise OSError(e.errno, e.strerror, os.fspath(self.path)) from None
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
