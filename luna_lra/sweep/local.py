"""The local backend of `python -m luna_lra.sweep`: one run after another on this machine,
each trainer writing to WORKDIR/train.log, which is copied here as it grows.

The sweep owns its trainer: the trainer dies with this process (luna_lra.lifetime), and
SIGTERM or Ctrl-C here is passed on to it, then waited for: it saves a checkpoint of the step
it reached and exits 143.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from luna_lra import exits, lifetime
from luna_lra.sweep import state
from luna_lra.sweep.driver import Attempt, say

STOP_GRACE_SECONDS = 120  # a stopped trainer's time to save its checkpoint before SIGKILL
POLL_SECONDS = 0.1


def run_attempt(planned, attempt: int) -> Attempt:
    """One attempt of a run (a driver.Planned) here, its output streamed."""
    if attempt == 1:
        say(f"{planned.head}: {planned.why}: {shlex.join(planned.argv)}")
    os.makedirs(planned.workdir, exist_ok=True)
    log_path = os.path.join(planned.workdir, "train.log")
    devices = ", ".join(f"{k}={os.environ[k]}" for k in ("CUDA_VISIBLE_DEVICES",
                        "TPU_VISIBLE_CHIPS") if k in os.environ) or "all local devices"
    record = {"attempt": attempt, "host": socket.gethostname(), "devices": devices,
              "started_at": state.utc_now(), "command": planned.argv}
    state.write_process(planned.workdir, 0, state="running", **record)
    rc, error = None, ""
    try:
        rc = _stream(planned.argv, log_path)
        error = state.last_error_line(log_path) if rc else ""
    except OSError as e:
        rc, error = exits.EXIT["mistake"], f"could not start {planned.argv[0]}: {e}"
    finally:  # also when the sweep is stopped: the record says how the trainer ended
        state.write_process(planned.workdir, 0, state="exited", exit_status=rc, error=error,
                            ended_at=state.utc_now(), **record)
    return Attempt(rc, error)


def _stream(cmd: list[str], log_path: str) -> int:
    """Runs cmd with its stdout+stderr appended to log_path (its own file, so the trainer can
    still write after this process is gone), copying what it writes to our stdout as it comes.
    Stopped (KeyboardInterrupt: Ctrl-C, or SIGTERM turned into it by the CLI), it passes
    SIGTERM on and waits for the trainer to save and exit (SIGKILL after STOP_GRACE_SECONDS,
    or at a second interrupt)."""
    with open(log_path, "ab") as log, open(log_path, "rb") as tail:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        log.flush()
        tail.seek(0, os.SEEK_END)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=lifetime.child_env())
        try:
            while proc.poll() is None:
                _echo(tail)
                time.sleep(POLL_SECONDS)
            _echo(tail)
            return proc.returncode
        except BaseException:
            _stop(proc, tail)
            raise


def _echo(tail) -> None:
    """What the trainer wrote since the last call, to our stdout."""
    if chunk := tail.read():
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def _stop(proc: subprocess.Popen, tail) -> None:
    """SIGTERM to the trainer, then its output until it exits (it saves a checkpoint)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_SECONDS
    try:
        while proc.poll() is None and time.time() < deadline:
            _echo(tail)
            time.sleep(POLL_SECONDS)
        _echo(tail)
    except KeyboardInterrupt:  # asked twice: at once
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
