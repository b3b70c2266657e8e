"""The local backend of `python -m luna_lra.sweep`: one run after another on this machine,
each trainer's output streamed here and copied to WORKDIR/train.log."""

from __future__ import annotations

import codecs
import os
import shlex
import socket
import subprocess
import sys
import time

from luna_lra import sweep_state
from luna_lra.train import EXIT


def run_attempt(planned, attempt: int):
    """One attempt of a run (a sweep.Planned) here, its output streamed: a sweep.Attempt."""
    from luna_lra.sweep import Attempt, _say

    if attempt == 1:
        _say(f"{planned.head}: {planned.why}: {shlex.join(planned.argv)}")
    os.makedirs(planned.workdir, exist_ok=True)
    log_path = os.path.join(planned.workdir, "train.log")
    devices = ", ".join(f"{k}={os.environ[k]}" for k in ("CUDA_VISIBLE_DEVICES",
                        "TPU_VISIBLE_CHIPS") if k in os.environ) or "all local devices"
    record = {"attempt": attempt, "host": socket.gethostname(), "devices": devices,
              "started_at": sweep_state.utc_now(), "command": planned.argv}
    sweep_state.write_process(planned.workdir, 0, state="running", **record)
    try:
        rc = _stream(planned.argv, log_path)
    except OSError as e:
        rc, error = EXIT["mistake"], f"could not start {planned.argv[0]}: {e}"
    else:
        error = sweep_state.last_error_line(log_path) if rc else ""
    sweep_state.write_process(planned.workdir, 0, state="exited", exit_status=rc, error=error,
                              ended_at=sweep_state.utc_now(), **record)
    return Attempt(rc, error)


def _stream(cmd: list[str], log_path: str) -> int:
    """Runs cmd, copying its stdout+stderr to our stdout and to log_path as it comes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        try:
            while True:
                chunk = proc.stdout.read(65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
            sys.stdout.write(decoder.decode(b"", final=True))
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
