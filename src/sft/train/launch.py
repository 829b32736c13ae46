"""Run ``llamafactory-cli train <yaml>`` the way the reference does, and watch it.

The launch (docs/config-contract.md §6.1, docs/llamafactory-rules.md §11.2):

- ``llamafactory-cli`` from the training env (``meta_info.environment.sft_uv``/bin); when that env is
  absent, the one beside the current interpreter, said in one log line;
- ``FORCE_TORCHRUN=1`` always (LLaMA-Factory refuses DeepSpeed without torchrun, even on one device),
  ``NPROC_PER_NODE`` = ``infrastructure.n_gpus_per_node``, the env's ``bin`` first on ``PATH`` (torchrun
  is looked up there);
- its own session / process group, so a terminal Ctrl-C reaches sft only and is forwarded once.

Multi-node (``infrastructure.n_nodes`` > 1): every node runs the same ``kedro run`` (same config, same
shared ``output_dir``) with ``NNODES`` = n_nodes and its own ``NODE_RANK``; ``MASTER_ADDR`` /
``MASTER_PORT`` name node 0 and must agree everywhere. Each value comes from ``infrastructure.*`` when
set, else from the environment. Node 0 converts and records; the others wait for its dataset
(sft.train.multinode). Typical starts::

    # by hand, on node k of N (same SFT_RUN_ID everywhere):
    SFT_RUN_ID=run-42 NODE_RANK=k MASTER_ADDR=node0.example MASTER_PORT=29500 SFT_CONFIG=config.yaml kedro run
    # under Slurm (one task per node): NODE_RANK falls back to $SLURM_NODEID
    srun --nodes=$N --ntasks-per-node=1 bash -c \\
      'MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) MASTER_PORT=29500 kedro run'

Only node 0 writes ``runtime_info.output`` and the history entry (its rank 0 writes the run directory);
each node holds its own output-dir lock (``lock_name``).

Console output (stdout + stderr merged) goes to the terminal and is teed into the log file with every
credential value replaced by ``***REDACTED***``. A progress line (step / total, loss, ETA) comes from
tailing ``<output_dir>/trainer_log.jsonl``. SIGINT / SIGTERM are forwarded to the trainer (its process
group, plus torchrun's workers, which torchrun starts in sessions of their own); a second signal kills
the whole tree. Status: exit 0 -> completed; 130 / 143 / killed by a signal / a forwarded signal ->
interrupted; anything else -> failed.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from sft.config.credentials import redact_text
from sft.train.results import read_trainer_log
from sft.train.yaml_gen import LOCK_NAME, OutputDirError

logger = logging.getLogger(__name__)

Status = Literal["completed", "failed", "interrupted"]
INTERRUPT_EXIT_CODES = {130, 143, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL}
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_KILL_GRACE_S = 60.0  # after a forwarded signal, how long the trainer may take to stop


class LaunchError(RuntimeError):
    """The trainer could not be started (missing CLI, missing DeepSpeed file, bad path)."""


@dataclass(frozen=True)
class LaunchResult:
    exit_code: int
    status: Status
    log_path: Path
    started_at: str
    completed_at: str


@dataclass(frozen=True)
class Progress:
    """One ``trainer_log.jsonl`` record, as the progress line shows it."""

    current_steps: int
    total_steps: int
    loss: float | None
    percentage: float | None
    elapsed_time: str | None
    remaining_time: str | None

    def line(self) -> str:
        loss = f"{self.loss:.4f}" if self.loss is not None else "-"
        pct = f" ({self.percentage:.0f}%)" if self.percentage is not None else ""
        return (
            f"[sft] step {self.current_steps}/{self.total_steps}{pct} loss {loss} "
            f"elapsed {self.elapsed_time or '-'} eta {self.remaining_time or '-'}"
        )


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_file_path(logs_dir: Path, run_name: str, when: datetime | None = None) -> Path:
    """``<logs_dir>/<run>_<YYYYmmdd_HHMMSS>.log`` with a UTC stamp (``logs_dir``: ``artifacts/logs``)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d_%H%M%S")
    return Path(logs_dir) / f"{run_name}_{stamp}.log"


def status_from_exit(exit_code: int, signalled: bool) -> Status:
    if exit_code == 0:
        return "completed"
    if signalled or exit_code in INTERRUPT_EXIT_CODES:
        return "interrupted"
    return "failed"


# --------------------------------------------------------------------------------- env and command


def find_llamafactory_cli(env_dir: Path | None) -> tuple[Path, str]:
    """``(cli, note)``: the training env's ``llamafactory-cli``, else the current interpreter's."""
    if env_dir is not None and (Path(env_dir) / "bin" / "llamafactory-cli").is_file():
        return Path(env_dir).resolve() / "bin" / "llamafactory-cli", f"training env {Path(env_dir).resolve()}"
    fallback = Path(sys.executable).parent / "llamafactory-cli"
    if fallback.is_file():
        reason = (
            f"{env_dir} has no bin/llamafactory-cli" if env_dir is not None else "no training env configured"
        )
        return fallback, f"current environment {fallback.parent.parent} ({reason})"
    raise LaunchError(
        f"llamafactory-cli not found in {env_dir}/bin nor beside {sys.executable}. "
        "Fix: run scripts/install_env.sh (creates meta_info.environment.sft_uv)"
    )


def _first_set(*values: Any) -> str | None:
    for value in values:
        if value is not None and value != "":
            return str(value)
    return None


def distributed_env(
    *,
    n_gpus: int,
    n_nodes: int = 1,
    node_rank: int | None = None,
    master_addr: str = "",
    master_port: int | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``FORCE_TORCHRUN``/``NPROC_PER_NODE`` and, for several nodes, the rendezvous variables."""
    base = os.environ if base_env is None else base_env
    env = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": str(int(n_gpus))}
    if n_nodes <= 1:
        # Explicit, so a NODE_RANK / MASTER_ADDR left in the environment (a Slurm shell) cannot turn a
        # single-node run into `torchrun --nnodes 1 --node_rank k` waiting for a remote rendezvous.
        env.update({"NNODES": "1", "NODE_RANK": "0", "MASTER_ADDR": master_addr or "127.0.0.1"})
        if master_port is not None:
            env["MASTER_PORT"] = str(master_port)
        return env
    rank = _first_set(node_rank, base.get("NODE_RANK"), base.get("SLURM_NODEID"))
    addr = _first_set(master_addr, base.get("MASTER_ADDR"))
    port = _first_set(master_port, base.get("MASTER_PORT"))
    missing = [
        name
        for name, value in (("NODE_RANK", rank), ("MASTER_ADDR", addr), ("MASTER_PORT", port))
        if not value
    ]
    if missing:
        raise LaunchError(
            f"infrastructure.n_nodes is {n_nodes} but {', '.join(missing)} is not set. Fix: set "
            "infrastructure.node_rank / master_addr / master_port, or export NODE_RANK (or run under Slurm), "
            "MASTER_ADDR and MASTER_PORT on every node"
        )
    env.update(
        {"NNODES": str(n_nodes), "NODE_RANK": str(rank), "MASTER_ADDR": str(addr), "MASTER_PORT": str(port)}
    )
    return env


def _child_env(
    bin_dir: Path, dist_env: Mapping[str, str], extra_env: Mapping[str, str] | None, unset_env: Iterable[str]
) -> dict[str, str]:
    env = dict(os.environ)
    for name in unset_env:
        env.pop(name, None)
    env.update(dist_env)
    env.update(extra_env or {})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"  # progress reaches the terminal and the log as it happens
    return env


def _preflight(yaml_path: Path) -> dict[str, Any]:
    """Failures LLaMA-Factory would only report after its imports, in one clear line each."""
    if not yaml_path.is_file():
        raise LaunchError(f"training YAML {yaml_path} does not exist")
    if any(ch.isspace() for ch in str(yaml_path)):
        raise LaunchError(
            f"training YAML path {yaml_path!r} contains whitespace; LLaMA-Factory's torchrun launch splits its "
            "command on whitespace. Fix: move the project to a path without spaces"
        )
    args = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    deepspeed = args.get("deepspeed")
    if isinstance(deepspeed, str) and not Path(deepspeed).is_file():
        raise LaunchError(
            f"DeepSpeed config {deepspeed} (training.deepspeed in {yaml_path}) is missing. Fix: restore "
            "artifacts/training_config/deepspeed/, or set training.deepspeed to an existing file or null"
        )
    return args


# ---------------------------------------------------------------------------------- output-dir lock


def lock_name(node_rank: int = 0) -> str:
    """Node 0 holds the run's lock; node k of a multi-node run its own (one holder per lock)."""
    return LOCK_NAME if node_rank == 0 else f".sft-train.node{node_rank}.lock"


@contextlib.contextmanager
def output_dir_lock(output_dir: Path, node_rank: int = 0) -> Iterator[Path]:
    """Hold ``<output_dir>/.sft-train.lock`` (node k > 0: ``.sft-train.node<k>.lock``) for the whole launch.

    The kernel releases the lock when the holder dies, so a crashed run never leaves a stale block;
    a second live run into the same directory (on the same node rank) is refused with the holder's pid.
    Per-node locks: on shared storage where locks work across hosts, the nodes of one run must not
    refuse each other.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock_path = output_dir / lock_name(node_rank)
    handle = open(lock_path, "a+", encoding="utf-8")  # held across the yield
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputDirError(
                f"runtime_info.input.training.output_dir: {output_dir} is in use by another live sft training "
                f"run ({holder}). Fix: wait for it or stop it, or choose another output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} node {node_rank} since {utc_now()}\n")
        handle.flush()
        yield lock_path
    finally:
        handle.close()  # closing the descriptor releases the flock


# ------------------------------------------------------------------------------------ progress tail


class TrainerLogTail(threading.Thread):
    """Polls ``trainer_log.jsonl``; calls ``on_progress`` once per new step record.

    Handles the file being replaced (LLaMA-Factory deletes it at start with overwrite_output_dir) and
    records already present at launch (a resume appends) are not reported again.
    """

    def __init__(
        self, path: Path | None, on_progress: Callable[[Progress], None] | None, interval: float = 1.0
    ) -> None:
        super().__init__(name="sft-trainer-log-tail", daemon=True)
        self.path = path
        self.on_progress = on_progress
        self.interval = interval
        self.stop_event = threading.Event()
        self.on_tick: Callable[[], None] | None = None
        self._seen_steps = (
            {int(r.get("current_steps", -1)) for r in read_trainer_log(path)} if path else set()
        )
        self._identity = self._stat_identity()
        self.last: Progress | None = None

    def _stat_identity(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_dev)

    def poll(self) -> None:
        if self.path is None or self.on_progress is None:
            return
        identity = self._stat_identity()
        if identity != self._identity:
            self._identity = identity
            self._seen_steps = set()  # a new file: every record in it is new
        for record in read_trainer_log(self.path):
            step = record.get("current_steps")
            if step is None or int(step) in self._seen_steps or record.get("loss") is None:
                continue
            self._seen_steps.add(int(step))
            progress = Progress(
                current_steps=int(step),
                total_steps=int(record.get("total_steps", 0)),
                loss=float(record["loss"]),
                percentage=record.get("percentage"),
                elapsed_time=record.get("elapsed_time"),
                remaining_time=record.get("remaining_time"),
            )
            self.last = progress
            with contextlib.suppress(Exception):
                self.on_progress(progress)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            if self.on_tick is not None:
                with contextlib.suppress(Exception):
                    self.on_tick()
            with contextlib.suppress(Exception):
                self.poll()
        with contextlib.suppress(Exception):
            self.poll()


def log_progress(progress: Progress) -> None:
    """Default progress sink: one log line per logged step."""
    logger.info("%s", progress.line())


# -------------------------------------------------------------------------------- process handling


class _ProcessTree:
    """The trainer and every descendant seen so far (torchrun's workers live in their own sessions)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pgid = proc.pid  # start_new_session=True: pid == pgid
        self._known: dict[int, Any] = {}
        self._lock = threading.Lock()
        try:
            import psutil

            self._psutil: Any = psutil
            self._root: Any = psutil.Process(proc.pid)
        except Exception:  # psutil missing, or the process already gone
            self._psutil = None
            self._root = None

    def refresh(self) -> None:
        if self._root is None:
            return
        try:
            children = self._root.children(recursive=True)
        except self._psutil.Error:
            return
        with self._lock:
            for child in children:
                self._known.setdefault(child.pid, child)

    def send(self, sig: int) -> None:
        """``sig`` to the process group and to every known descendant that is still the same process."""
        self.refresh()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        with self._lock:
            known = list(self._known.values())
        for child in known:
            with contextlib.suppress(Exception):
                if child.is_running():
                    child.send_signal(sig)

    def survivors(self) -> list[Any]:
        with self._lock:
            known = list(self._known.values())
        alive = []
        for child in known:
            with contextlib.suppress(Exception):
                if child.is_running() and child.status() != "zombie":
                    alive.append(child)
        return alive

    def reap(self, grace: float = 10.0) -> None:
        """Stop descendants that outlived the launcher (terminate, then kill after ``grace``)."""
        alive = self.survivors()
        if not alive:
            return
        logger.warning("stopping %d trainer process(es) left after the launcher exited", len(alive))
        for child in alive:
            with contextlib.suppress(Exception):
                child.terminate()
        _, still = self._psutil.wait_procs(alive, timeout=grace)
        for child in still:
            with contextlib.suppress(Exception):
                child.kill()


class _SignalForwarder:
    """Installs SIGINT/SIGTERM handlers (main thread only) that forward to the trainer's tree."""

    def __init__(self, tree: _ProcessTree) -> None:
        self.tree = tree
        self.received: int | None = None
        self.count = 0
        self.first_at: float | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
            self.first_at = time.monotonic()
            logger.warning("received %s: forwarding it to the trainer", signal.Signals(signum).name)
            self.tree.send(signum)
        else:
            logger.warning("received %s again: killing the trainer", signal.Signals(signum).name)
            self.tree.send(signal.SIGKILL)

    def escalate_if_stuck(self) -> None:
        if self.first_at is not None and time.monotonic() - self.first_at > _KILL_GRACE_S:
            logger.warning("trainer still running %.0f s after the signal: killing it", _KILL_GRACE_S)
            self.first_at = None
            self.tree.send(signal.SIGKILL)

    def __enter__(self) -> _SignalForwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in _FORWARDED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        else:
            logger.info("not on the main thread: SIGINT/SIGTERM are not forwarded by sft")
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class _Tee:
    """Decodes the child's bytes, redacts complete lines, writes them to the console and the log."""

    def __init__(self, console: TextIO | None, log: TextIO, secrets: Iterable[str]) -> None:
        self.console = console
        self.log = log
        self.secrets = [s for s in secrets if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._pending + self._decoder.decode(data, final=final)
        cut = max(text.rfind("\n"), text.rfind("\r")) + 1
        if final:
            cut = len(text)
        ready, self._pending = text[:cut], text[cut:]
        if ready:
            self.write(ready)

    def write(self, text: str) -> None:
        text = redact_text(text, self.secrets)
        self.log.write(text)
        self.log.flush()
        if self.console is not None:
            with contextlib.suppress(Exception):
                self.console.write(text)
                self.console.flush()


# ------------------------------------------------------------------------------------------- launch


def launch_training(
    yaml_path: Path,
    *,
    env_dir: Path | None,
    n_gpus: int,
    log_path: Path,
    n_nodes: int = 1,
    node_rank: int | None = None,
    master_addr: str = "",
    master_port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    unset_env: Iterable[str] = (),
    on_progress: Callable[[Progress], None] | None = log_progress,
    secrets: Iterable[str] = (),
    cwd: Path | None = None,
    console: TextIO | None = None,
) -> LaunchResult:
    """Run ``llamafactory-cli train <yaml_path>`` to the end and report how it ended.

    Raises LaunchError (before anything starts) for a missing CLI or DeepSpeed file; every other
    outcome is a LaunchResult. ``console`` defaults to this process's stdout.
    """
    yaml_path = Path(yaml_path).resolve()
    args = _preflight(yaml_path)
    cli, where = find_llamafactory_cli(env_dir)
    dist_env = distributed_env(
        n_gpus=n_gpus, n_nodes=n_nodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port
    )
    env = _child_env(cli.parent, dist_env, extra_env, unset_env)
    secret_values = [s for s in secrets if s]
    command = [str(cli), "train", str(yaml_path)]
    console = sys.stdout if console is None else console

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    output_dir = Path(str(args.get("output_dir", ""))) if args.get("output_dir") else None
    started_at = utc_now()
    with open(log_path, "a", encoding="utf-8") as log:
        tee = _Tee(console, log, secret_values)
        header = [
            f"[sft] {started_at} llamafactory-cli from the {where}",
            f"[sft] command: {' '.join(command)}",
            "[sft] launch env: " + " ".join(f"{k}={v}" for k, v in sorted(dist_env.items())),
        ]
        tee.write("\n".join(header) + "\n")
        logger.info("llamafactory-cli from the %s; log: %s", where, log_path)
        # Snapshot trainer_log.jsonl before the start, so records written from now on are all reported.
        tail = TrainerLogTail(
            output_dir / "trainer_log.jsonl" if output_dir is not None else None, on_progress
        )
        try:
            proc = subprocess.Popen(
                command,
                cwd=str(cwd) if cwd else None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"cannot start {cli}: {exc}") from exc
        exit_code, signalled = _supervise(proc, tee, tail)
        completed_at = utc_now()
        status = status_from_exit(exit_code, signalled)
        tee.write(f"[sft] {completed_at} llamafactory-cli exited with {exit_code}: {status}\n")
    return LaunchResult(
        exit_code=exit_code,
        status=status,
        log_path=log_path,
        started_at=started_at,
        completed_at=completed_at,
    )


def _supervise(proc: subprocess.Popen[bytes], tee: _Tee, tail: TrainerLogTail) -> tuple[int, bool]:
    """Stream the output until EOF, forward signals, tail progress; returns (exit code, signalled).

    The tail thread also refreshes the process tree and enforces the kill grace while the main thread
    blocks on the pipe.
    """
    tree = _ProcessTree(proc)
    forwarder = _SignalForwarder(tree)
    with forwarder:
        tail.on_tick = lambda: (tree.refresh(), forwarder.escalate_if_stuck())
        tail.start()
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                tee.feed(chunk)
            tee.feed(b"", final=True)
            exit_code = proc.wait()
        except BaseException:
            # Our own side failed (or a KeyboardInterrupt outside the handler): never orphan the trainer.
            tree.send(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            tree.send(signal.SIGKILL)
            raise
        finally:
            tail.stop_event.set()
            tail.join(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
    if tree._psutil is not None:
        tree.reap()
    return exit_code, forwarder.received is not None
