"""Starting, inspecting and stopping the stack's process trees (psutil, by pid and start since boot)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

from app.stack.config import HOST, StackConfig, StackError
from app.stack.state import Service
from conveyor.ports import bindable
from conveyor.process_identity import is_process, started_since_boot

log = logging.getLogger(__name__)

_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _process(pid: int) -> psutil.Process | None:
    """The live (not zombie) process with this pid, if any."""
    try:
        process = psutil.Process(pid)
        return None if process.status() in _GONE else process
    except psutil.Error:
        return None


def is_alive(service: Service) -> bool:
    """The recorded process still runs: same pid *and* same start (pids get reused)."""
    return _process(service.pid) is not None and is_process(service.pid, service.started)


def process_tree(pid: int) -> list[int]:
    """The pid and all its live descendants, whatever session or group they moved to."""
    process = _process(pid)
    if process is None:
        return []
    try:
        children = process.children(recursive=True)
    except psutil.Error:
        children = []
    return [pid, *(child.pid for child in children if _process(child.pid) is not None)]


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of the resident set sizes of the given processes (those still running)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (connections lingering in TIME-WAIT do not count)."""
    return bindable(HOST, port)


def bin_path(name: str) -> str:
    """A console script of this environment (the venv running Conveyor), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` is not installed in {Path(sys.executable).parent}")
    return found


def run_detached(name: str, cmd: list[str], env: dict[str, str], config: StackConfig) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session (`down` signals the whole group), logging to logs/<name>.log."""
    with open(config.logs_dir / f"{name}.log", "wb") as out, interruptible_children():
        return subprocess.Popen(
            cmd,
            cwd=config.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.contextmanager
def interruptible_children() -> Iterator[None]:
    """Children started in the block get SIGINT at its default even where this process ignores it.

    A process started with `&` from a script, or under nohup, runs with SIGINT ignored, and its
    children inherit that. Prefect's worker stops on SIGTERM by sending itself SIGINT: one that
    inherited the ignore never stopped, and `conveyor down` had to kill it. A signal this process
    handles is reset to the default in a child it starts, so it is handled here for the block (in
    the main thread, where Python allows it) and ignored again after."""
    ignored = (
        threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    )
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def spawn(name: str, cmd: list[str], env: dict[str, str], config: StackConfig) -> Service:
    """Start a long-running service and record what identifies it."""
    proc = run_detached(name, cmd, env, config)
    # None: it died at once; is_alive says so, and the log says why.
    started = started_since_boot(proc.pid)
    log_file = str(config.logs_dir / f"{name}.log")
    return Service(name=name, pid=proc.pid, started=-1.0 if started is None else started, log=log_file, cmd=cmd)


def log_tail(path: str | Path, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def terminate(services: Iterable[Service], timeout: float, *, expect_kill: bool = False) -> list[str]:
    """SIGTERM every live recorded tree, wait, then SIGKILL what is left; return survivors.

    `expect_kill`: the services are known to outlast a short grace (SeaweedFS), so SIGKILL is
    the plan, not news: it is logged at debug level, not as a warning."""
    targets: dict[int, tuple[psutil.Process, str]] = {}
    for service in services:
        if not is_alive(service):
            continue
        for pid in process_tree(service.pid):
            with contextlib.suppress(psutil.Error):
                targets[pid] = (psutil.Process(pid), service.name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
    processes = [process for process, _ in targets.values()]
    for process in processes:  # descendants that left the group
        with contextlib.suppress(psutil.Error):
            process.terminate()
    alive = _still_running(processes, timeout)
    for process in alive:
        level = logging.DEBUG if expect_kill else logging.WARNING
        log.log(level, "pid %d (%s) ignored SIGTERM; sending SIGKILL", process.pid, targets[process.pid][1])
        with contextlib.suppress(psutil.Error):
            process.kill()
    alive = _still_running(alive, 5)
    return sorted({targets[process.pid][1] for process in alive})


def _running(process: psutil.Process) -> bool:
    """Still running: not exited, not a zombie (our own exited children are reaped here)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(process.pid, os.WNOHANG)
    try:
        return process.is_running() and process.status() not in _GONE
    except psutil.Error:
        return False


def _still_running(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` for the processes to end; return those still running."""
    deadline = time.monotonic() + timeout
    alive = [process for process in processes if _running(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [process for process in alive if _running(process)]
    return alive
