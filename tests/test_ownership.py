"""One trainer per run: the workdir lock, a sweep that owns its trainers (SIGKILL, SIGTERM), and
Ctrl-C on a bare trainer. Each test drives the real CLIs on the small generated ListOps set
and compares with one uninterrupted run."""

import os
import signal
import textwrap
import time

import pytest

from conftest import (latest_checkpoint, metrics, one_line_error, result, run_train, start,
                      train_args, wait_for)
from luna_lra import workdir_lock

pytestmark = pytest.mark.slow
STEPS = 120


def args(data_dir, workdir, **extra):
    return train_args(data_dir, workdir, STEPS, **{"train.eval_every": 40, **extra})


@pytest.fixture(scope="module")
def reference(listops_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    run_train(args(listops_dir, workdir))
    return result(workdir)


def gone(pid):
    """The process has exited (a zombie left for a parent that has not reaped it counts)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" in f.read()
    except FileNotFoundError:
        return True


def lock_pid(workdir):
    import json
    with open(os.path.join(workdir, workdir_lock.FILE)) as f:
        return json.load(f)["pid"]


def test_the_lock_names_its_holder_and_a_dead_holder_is_taken_over(tmp_path):
    (tmp_path / workdir_lock.FILE).write_text('{"host": "gone", "pid": 1, "started_at": "x"}')
    lock = workdir_lock.Lock(str(tmp_path)).acquire()  # a file nobody holds: stale, taken over
    try:
        assert f"pid {os.getpid()}" in workdir_lock.holder(str(tmp_path))
        with pytest.raises(workdir_lock.Busy, match=rf"is in use by another trainer \(pid "
                                                    rf"{os.getpid()} on host"):
            workdir_lock.Lock(str(tmp_path)).acquire()
    finally:
        lock.release()
    assert workdir_lock.holder(str(tmp_path)) is None
    waited = []
    assert workdir_lock.wait_free(str(tmp_path), lambda: False, waited.append) and not waited


def test_a_second_trainer_on_a_live_workdir_is_refused(listops_dir, reference, tmp_path):
    workdir = tmp_path / "run"
    first = start("luna_lra.train", *args(listops_dir, workdir))
    wait_for(lambda: latest_checkpoint(workdir) >= 10, first, "a checkpoint")
    first.send_signal(signal.SIGSTOP)  # it holds the lock and cannot finish while the second
    try:                               # trainer starts
        second = run_train(args(listops_dir, workdir, **{"optim.learning_rate": 0.01}),
                           check=False)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    line = one_line_error(second)
    assert f"is in use by another trainer (pid {first.pid} on host" in line, line
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    steps = [(r["step"], r["split"]) for r in metrics(workdir)]
    assert len(steps) == len(set(steps))  # no row written twice
    assert result(workdir)["params_sha256"] == reference["params_sha256"]


SWEEP = """
from luna_lra.sweep import grid
def get_sweep():
    return grid({{"config": ["configs/listops.py:tiny"]}}, fixed={fixed!r})
"""


def sweep_file(tmp_path, data_dir):
    fields = dict(arg.split("=", 1) for arg in args(data_dir, "x")[4:])
    fixed = {k[len("--config."):]: v for k, v in fields.items()}
    path = tmp_path / "sweep.py"
    path.write_text(textwrap.dedent(SWEEP.format(fixed=fixed)))
    return str(path)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_stopped_sweep_leaves_no_trainer_and_resumes(listops_dir, reference, tmp_path, how):
    path, root = sweep_file(tmp_path, listops_dir), tmp_path / "runs"
    workdir = root / "listops-tiny"
    driver = start("luna_lra.sweep", "--sweep", path, "--root", root, log=tmp_path / "1.log")
    wait_for(lambda: latest_checkpoint(workdir) >= 10, driver, "a checkpoint")
    trainer = lock_pid(workdir)
    driver.send_signal(how)
    driver.wait(timeout=120)
    if how != signal.SIGKILL:  # the driver passes it on, waits for the save, then exits
        assert driver.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[how], \
            (tmp_path / "1.log").read_text()[-2000:]
    deadline = time.time() + 20
    while not gone(trainer):
        assert time.time() < deadline, "the trainer outlived its sweep by 20 s"
        time.sleep(0.05)
    log = (workdir / "train.log").read_text()
    saved = int(log.split("preempted: stopped at step ")[1].split(" ")[0])
    assert saved == latest_checkpoint(workdir)  # it saved the step it reached
    again = start("luna_lra.sweep", "--sweep", path, "--root", root, log=tmp_path / "2.log")
    assert again.wait(timeout=300) == 0, (tmp_path / "2.log").read_text()[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} at step {saved}" in \
        (workdir / "train.log").read_text()
    assert result(workdir)["params_sha256"] == reference["params_sha256"]
    assert result(workdir)["attempts"] == 2


def test_ctrl_c_on_a_trainer_saves_and_exits_143(listops_dir, reference, tmp_path):
    workdir = tmp_path / "run"
    proc = start("luna_lra.train", *args(listops_dir, workdir))
    wait_for(lambda: latest_checkpoint(workdir) >= 10, proc, "a checkpoint")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert "SIGINT: saving a checkpoint of this step, then stopping" in err
    saved = int(err.split("preempted: stopped at step ")[1].split(" ")[0])
    assert saved == latest_checkpoint(workdir)
    run_train(args(listops_dir, workdir))
    assert result(workdir)["params_sha256"] == reference["params_sha256"]
