"""The Ray backend of `python -m luna_lra.sweep --backend ray`: independent runs packed onto
the accelerators of one machine or a cluster.

Each trainer process is one Ray task that holds its resources (Ray sets CUDA_VISIBLE_DEVICES /
TPU_VISIBLE_CHIPS for it) and runs the ordinary `python -m luna_lra.train ...` as a subprocess
in the sweep's directory, its output appended to WORKDIR/train.log (train.process<i>.log for
process i > 0), so device isolation, logs and resume stay the trainer's own. A run with
`hosts: N` gets a placement group of N bundles on distinct nodes (STRICT_SPREAD; on TPU,
`ray.util.tpu.slice_placement_group`, one bundle per host of the slice); bundle i starts
process i with the coordinator address of bundle 0 (`--coordinator_address/--num_processes/
--process_id`; on a TPU slice `--distributed=on`, as JAX finds the slice's hosts itself).

Retries are a loop in the driver (luna_lra.sweep.driver.drive_run, shared with the local one),
not Ray's `max_retries`/`retry_exceptions`: a multi-host run must restart all its processes
together under a new coordinator (Ray retries tasks one at a time), and the driver must see
each attempt's exit status to print and record it and to leave mistakes alone. Ray's part is
placing the tasks, isolating devices and telling a dead worker or node (a RayError other than
a task's own exception), which the loop retries like an exit status that a retry can fix.

The trainer subprocess runs in its own session, so a terminal's Ctrl-C reaches only the
driver, which cancels the tasks: each task sends its trainer SIGTERM, and the trainer saves a
checkpoint and exits 143. A trainer whose Ray worker dies (its driver or node killed) gets
SIGTERM (luna_lra.lifetime) and Ray's clean-up of the worker's children SIGKILLs it: either
way the next attempt resumes from its last checkpoint. A trainer holds a lock on its workdir
until it exits (luna_lra.workdir_lock), and the driver waits for it to be free before each
attempt, so no retry or restarted sweep starts a second trainer beside a dying one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from luna_lra import exits, lifetime
from luna_lra.sweep import state
from luna_lra.sweep.driver import Attempt, drive_run, say, terminate
from luna_lra.sweep.runs import SweepError

FORWARDED_ENV_PREFIXES = ("JAX_", "XLA_")  # the driver's settings that change what JAX computes
TERM_GRACE_SECONDS = 60  # a cancelled trainer's time to save its checkpoint before SIGKILL
POLL_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one trainer process holds: Ray logical CPUs, GPUs or TPU chips."""

    cpus: float = 1
    gpus: int = 0
    tpu_chips: int = 0

    @property
    def kind(self) -> str:
        return "gpu" if self.gpus else "tpu" if self.tpu_chips else "cpu"

    def bundle(self) -> dict[str, float]:
        return {k: v for k, v in (("CPU", self.cpus), ("GPU", self.gpus),
                                  ("TPU", self.tpu_chips)) if v}

    def task_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.tpu_chips:
            opts["resources"] = {"TPU": self.tpu_chips}
        return opts

    def describe(self) -> str:
        return {"gpu": f"{self.gpus} GPU(s)", "tpu": f"{self.tpu_chips} TPU chip(s)",
                "cpu": f"{self.cpus:g} CPU(s)"}[self.kind]


def choose_resources(gpus: int | None, tpu_chips: int | None, cpus: float | None,
                     nodes: Sequence[Mapping[str, Any]]) -> Resources:
    """The per-process resources the flags ask for; none given: one GPU if the cluster has
    GPUs, else one host's TPU chips (the most any node has) if it has TPUs, else one CPU."""
    if gpus:
        return Resources(gpus=gpus)
    if tpu_chips:
        return Resources(tpu_chips=tpu_chips)
    if cpus:
        return Resources(cpus=cpus)
    most = lambda kind: max((n.get("Resources", {}).get(kind, 0) for n in nodes  # noqa: E731
                             if n.get("Alive")), default=0)
    if most("GPU"):
        return Resources(gpus=1)
    if most("TPU"):
        return Resources(tpu_chips=int(most("TPU")))
    return Resources(cpus=1)


def check_fits(runs: Sequence[Mapping[str, Any]], res: Resources,
               nodes: Sequence[Mapping[str, Any]]) -> None:
    """SweepError naming the first run whose processes no set of alive nodes can hold."""
    want = res.bundle()
    fitting = [n for n in nodes if n.get("Alive") and all(
        n.get("Resources", {}).get(k, 0) >= v for k, v in want.items())]
    for run in runs:
        if len(fitting) < run.get("hosts", 1):
            have = "; ".join(f"{n.get('NodeManagerAddress')}: " + ", ".join(
                f"{k} {v:g}" for k, v in sorted(n.get("Resources", {}).items())
                if k in ("CPU", "GPU", "TPU")) for n in nodes if n.get("Alive"))
            raise SweepError(f"run {run['name']!r}: needs {run.get('hosts', 1)} node(s) with "
                             f"{res.describe()} each; the Ray cluster has {len(fitting)} "
                             f"({have or 'no alive nodes'})")


# ----------------------------------------------------------------------------- the Ray task

def _child_env(forwarded: Mapping[str, str], kind: str, hosts: int) -> dict[str, str]:
    env = lifetime.child_env()  # the Ray worker's: CUDA_VISIBLE_DEVICES / TPU_* set by Ray
    env.update(forwarded)
    if kind == "cpu":
        env["JAX_PLATFORMS"] = "cpu"  # a CPU run never takes an accelerator of its node
    if kind == "tpu" and hosts == 1:
        # One host of a multi-host slice training alone: libtpu must not wait for the others.
        env.setdefault("TPU_HOST_BOUNDS", "1,1,1")
    return env


def run_trainer(argv: Sequence[str], cwd: str, workdir: str, process_id: int, attempt: int,
                forwarded_env: Mapping[str, str], kind: str, hosts: int) -> dict[str, Any]:
    """Runs one trainer process to its end (in a Ray task); returns its exit status and last
    error line. Cancelling the task (KeyboardInterrupt) stops the trainer: SIGTERM, then
    SIGKILL after TERM_GRACE_SECONDS."""
    import ray

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Ray cancels a running task through the SIGINT handler, which a Ray started from a
        # background shell job ignores: without this, a cancelled trainer would never stop.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.makedirs(os.path.join(workdir, state.STATE_DIR), exist_ok=True)
    log_path = os.path.join(workdir, "train.log" if process_id == 0
                            else f"train.process{process_id}.log")
    ids = ray.get_runtime_context().get_accelerator_ids()
    devices = {"gpu": "GPU " + ",".join(ids.get("GPU", [])),
               "tpu": "TPU chips " + ",".join(ids.get("TPU", []))}.get(kind, "cpu")
    cmd = [sys.executable, *argv]
    record = {"attempt": attempt, "host": socket.gethostname(),
              "node_ip": ray.util.get_node_ip_address(), "devices": devices,
              "ray_node": ray.get_runtime_context().get_node_id(),
              "started_at": state.utc_now(), "command": cmd}
    proc = None
    try:
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {attempt} on "
                      f"{record['host']} ({devices}): {subprocess.list2cmdline(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, cwd=cwd, env=_child_env(forwarded_env, kind, hosts),
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # Ctrl-C is the driver's to handle
            state.write_process(workdir, process_id, state="running", pid=proc.pid,
                                      **record)
            _wait_or_stop(proc)
    finally:  # also when cancelled: the record says how the trainer ended
        rc = proc.returncode if proc is not None else None
        error = state.last_error_line(log_path) if rc else ""
        state.write_process(workdir, process_id, state="exited",
                                  pid=proc.pid if proc else None, exit_status=rc, error=error,
                                  ended_at=state.utc_now(), **record)
    return {"exit_status": rc, "error": error, "host": record["host"]}


def _wait_or_stop(proc: subprocess.Popen) -> int:
    try:
        while True:  # short waits: Ray's cancellation (the interpreter's SIGINT handler)
            try:     # runs between bytecodes, never inside one long wait
                return proc.wait(POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:  # cancelled (KeyboardInterrupt) or the worker is shutting down
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TERM_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _coordinator_address() -> str:
    """host:port for jax.distributed's coordinator on this node (a free port, in a task on
    the bundle that will run process 0)."""
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"{ray.util.get_node_ip_address()}:{port}"


# ----------------------------------------------------------------------------- the driver


class RayBackend:
    """Starts the attempts of runs on a Ray cluster; one thread per run drives its retries."""

    def __init__(self, res: Resources, cwd: str):
        import ray

        self.ray, self.res, self.cwd = ray, res, cwd
        self.trainer = ray.remote(max_retries=0)(run_trainer)
        self.address_task = ray.remote(num_cpus=0, max_retries=0)(_coordinator_address)
        self.forwarded = {k: v for k, v in os.environ.items()
                          if k.startswith(FORWARDED_ENV_PREFIXES)}
        self.stopping = threading.Event()

    def attempt(self, planned, attempt: int, say: Callable[[str], None]):
        """One attempt of a run (a driver.Planned), to the end of all its processes: a
        driver.Attempt."""
        run, workdir = planned.run, planned.workdir
        argv = planned.argv[1:]  # without the python: each node's worker uses its own
        if run.get("hosts", 1) == 1:
            return self._collect([self._submit(argv, workdir, 0, attempt, 1, {})], workdir,
                                 attempt, say)
        pg, bundle_res, release = self._placement_group(run)
        try:
            refs = None if pg is None else self._submit_group(run, argv, workdir, attempt, pg,
                                                               bundle_res)
            if not refs:
                return Attempt(None, "stopped")
            return self._collect(refs, workdir, attempt, say)
        finally:
            release()

    def _submit(self, argv, workdir, process_id, attempt, hosts, options):
        opts = {**self.res.task_options(), **options}
        return self.trainer.options(**opts).remote(
            list(argv), self.cwd, workdir, process_id, attempt, self.forwarded, self.res.kind,
            hosts)

    def _placement_group(self, run):
        """(a placement group of one bundle per host, ready; the bundle's resources; how to
        release it). The group is None when the sweep stops while waiting for it."""
        from ray.util.placement_group import placement_group

        hosts = run["hosts"]
        if self.res.kind == "tpu":  # a whole slice, reserved by Ray's TPU helper
            from ray.util import tpu

            topology, version = tpu_slice_shape(self.ray.nodes())
            handle = tpu.slice_placement_group(topology, version)
            if handle.num_hosts != hosts:
                handle.shutdown()
                raise SweepError(f"run {run['name']!r}: hosts={hosts}, but a multi-host TPU "
                                 f"run takes a whole slice ({version} {topology}: "
                                 f"{handle.num_hosts} hosts)")
            pg, bundle_res, release = handle.placement_group, handle.bundle_resources, \
                handle.shutdown
        else:
            bundle_res = self.res.bundle()
            pg = placement_group([bundle_res] * hosts, strategy="STRICT_SPREAD")
            release = lambda: self.ray.util.remove_placement_group(pg)  # noqa: E731
        while not self.stopping.is_set():
            ready, _ = self.ray.wait([pg.ready()], timeout=POLL_SECONDS)
            if ready:
                return pg, bundle_res, release
        return None, bundle_res, release

    def _submit_group(self, run, argv, workdir, attempt, pg, bundle_res):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup

        hosts = run["hosts"]
        on = [{"scheduling_strategy": InGroup(placement_group=pg,
                                              placement_group_bundle_index=i)}
              for i in range(hosts)]
        if self.res.kind == "tpu":  # JAX finds the slice's hosts and their order itself
            extra = [["--distributed=on"]] * hosts
        else:
            address = self.ray.get(self.address_task.options(**on[0]).remote())
            extra = [[f"--coordinator_address={address}", f"--num_processes={hosts}",
                      f"--process_id={i}"] for i in range(hosts)]
        if self.stopping.is_set():
            return None
        options = [dict(o, num_cpus=bundle_res.get("CPU", 0), num_gpus=bundle_res.get("GPU", 0),
                        resources={k: v for k, v in bundle_res.items()
                                   if k not in ("CPU", "GPU")}) for o in on]
        return [self._submit([*argv, *extra[i]], workdir, i, attempt, hosts, options[i])
                for i in range(hosts)]

    def _collect(self, refs, workdir, attempt, say):
        """Waits for every process; when one fails, stops the others (a run is all its
        processes). The attempt's status: a final one if any process had one, else the
        first failure."""
        ended: list = []  # outcomes in the order the processes ended
        pending, announced, cancelled = list(refs), False, False
        while pending:
            done, pending = self.ray.wait(pending, timeout=POLL_SECONDS)
            ended += [self._outcome(ref) for ref in done]
            failed = any(o.exit_status != 0 for o in ended)
            if (failed or self.stopping.is_set()) and pending and not cancelled:
                for ref in pending:  # SIGTERM to the trainer (see run_trainer)
                    self.ray.cancel(ref)
                cancelled = True
            if not announced:
                announced = self._announce(workdir, attempt, len(refs), say)
        failures = [o for o in ended if o.exit_status != 0]
        finals = [o for o in failures if not exits.classify(o.exit_status)[0]]
        return (finals or failures or [Attempt(0, "")])[0]

    def _outcome(self, ref):
        exc = self.ray.exceptions
        try:
            out = self.ray.get(ref)
            return Attempt(out["exit_status"], out["error"])
        except exc.TaskCancelledError:
            return Attempt(None, "stopped: another process of its run ended, or the sweep "
                                 "stopped")
        except exc.RayTaskError as e:  # our task itself failed (e.g. the directory is missing)
            return Attempt(exits.EXIT["mistake"],
                           f"the trainer could not be started: {str(e).strip().splitlines()[-1]}")
        except exc.RayError as e:  # the worker or its node died: Ray tells us, we retry
            return Attempt(None, f"{type(e).__name__}: {str(e).strip().splitlines()[0]}")

    def _announce(self, workdir, attempt, hosts, say) -> bool:
        procs = [p for p in state.read_processes(workdir, attempt)
                 if p.get("state") in ("running", "exited")]
        if len(procs) < hosts:
            return False
        say("running on " + "; ".join(f"{p['host']} ({p['devices']})" for p in procs)
            + (f", attempt {attempt}" if attempt > 1 else ""))
        return True


def tpu_slice_shape(nodes: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(topology, accelerator version) of the TPU slice the cluster's nodes belong to, from
    the labels Ray gives TPU nodes (ray.io/tpu-topology, ray.io/tpu-pod-type)."""
    for node in nodes:
        labels = node.get("Labels") or {}
        topology, pod_type = labels.get("ray.io/tpu-topology"), labels.get("ray.io/tpu-pod-type")
        if node.get("Alive") and topology and pod_type:
            return topology, pod_type.split("-")[0]
    raise SweepError("a multi-host TPU run needs Ray nodes on a TPU slice (labels "
                     "ray.io/tpu-topology and ray.io/tpu-pod-type); none found")


def connect(address: str | None):
    """Connects to the cluster at `address`, or starts Ray on this machine."""
    import ray

    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:  # a private instance: no dashboard (its CPU is better spent on the runs)
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    return ray


def run_sweep(todo: Sequence[Any], *, max_retries: int, address: str | None = None,
              gpus: int | None = None, tpu_chips: int | None = None,
              cpus: float | None = None) -> list[str]:
    """Drives every planned run (driver.Planned) on Ray, each in its own thread, as many at
    once as the cluster holds; returns 'finished' / 'failed' / 'stopped' per run, in order.
    Ctrl-C or SIGTERM stops the runs: their trainers get SIGTERM, save a checkpoint and exit."""
    ray = connect(address)
    try:
        nodes = ray.nodes()
        res = choose_resources(gpus, tpu_chips, cpus, nodes)
        check_fits([p.run for p in todo], res, nodes)
        total = ray.cluster_resources()
        say(f"Ray: {sum(1 for n in nodes if n.get('Alive'))} node(s) with "
                   + ", ".join(f"{k} {total[k]:g}" for k in ("CPU", "GPU", "TPU") if total.get(k))
                   + f"; each trainer process holds {res.describe()}")
        backend = RayBackend(res, os.getcwd())
        results: queue.Queue = queue.Queue()
        for i, planned in enumerate(todo):
            say(f"{planned.head}: queued ({planned.why})")
            threading.Thread(target=_drive, args=(i, planned, backend, max_retries, results),
                             daemon=True).start()
        out: list = [None] * len(todo)
        previous = signal.signal(signal.SIGTERM, terminate)  # Ray's own handler aside
        try:
            for _ in todo:
                i, outcome = results.get()
                out[i] = outcome
        except KeyboardInterrupt:
            _stop(backend, results, sum(o is None for o in out))
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        return out
    finally:
        ray.shutdown()


def _stop(backend: RayBackend, results: queue.Queue, running: int) -> None:
    """Ctrl-C or SIGTERM: cancels every task (each trainer gets SIGTERM, saves a checkpoint
    and exits 143) and waits for them, unless Ctrl-C comes again. (Had the driver been killed
    instead, its trainers would get SIGTERM as their workers die, then Ray's SIGKILL.)"""
    backend.stopping.set()
    say("stopping: each trainer saves a checkpoint (Ctrl-C again to stop at once)")
    deadline = time.time() + TERM_GRACE_SECONDS + 10
    try:
        for _ in range(running):
            results.get(timeout=max(deadline - time.time(), 0.1))
    except (queue.Empty, KeyboardInterrupt):
        pass


def _drive(i, planned, backend: RayBackend, max_retries: int, results: queue.Queue) -> None:
    def say_run(msg: str) -> None:
        say(f"{planned.head}: {msg}")

    try:
        outcome = drive_run(planned, lambda attempt: backend.attempt(planned, attempt, say_run),
                            max_retries=max_retries, stopping=backend.stopping)
    except Exception as e:  # noqa: BLE001 - one run's failure never stops the others
        say_run(f"FAILED in the sweep itself: {type(e).__name__}: {e}")
        outcome = "failed"
    results.put((i, outcome))
