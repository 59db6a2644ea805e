"""Run the WSGI app under gunicorn (threads per worker; more workers scale out).

``coordination serve`` starts this module as a child process (``python -m coordination_api.server``)
rather than calling gunicorn in its own process: the child starts with ``PROMETHEUS_MULTIPROC_DIR``
already in its environment, which prometheus_client needs before its first import (metrics.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess

from coordination_api.app import create_app
from coordination_api.config import Settings, SupervisionSettings
from coordination_api.core import validation
from coordination_api.health import CHILD_STATE_FILE, ChildState, write_child_state

log = logging.getLogger(__name__)
# SIGTERM: gunicorn stops accepting and gives in-flight requests this long to finish.
GRACEFUL_TIMEOUT = 30


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app()


def run_gunicorn(host: str, port: int, workers: int, threads: int, metrics_dir: str = "") -> None:
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "timeout": 60,
        "accesslog": None,
        "preload_app": False,
        # gunicornc is not used; its one socket per user ($HOME/.gunicorn/gunicorn.ctl) would be taken
        # over by every other gunicorn of that user on the host (a second serve, tests in parallel).
        "control_socket_disable": True,
    }
    if metrics_dir:
        options["child_exit"] = _forget_worker(metrics_dir)
    _Gunicorn(options).run()


def _forget_worker(metrics_dir: str) -> Any:
    """gunicorn's child_exit hook: a dead worker's live gauges (DB pool) no longer count."""

    def child_exit(_server: Any, worker: Any) -> None:

        multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]

    return child_exit


class SignalWaiter:
    """Race-free waiting for SIGTERM / SIGINT (and SIGCHLD) in the main thread: the handlers only set a
    flag, and Python's wakeup fd wakes the ``select``. (Setting a threading.Event from a handler can
    deadlock: the signal may land while the main thread holds that Event's lock inside ``wait``.)"""

    def __init__(self, *, children: bool = False) -> None:
        self.stop_requested = False
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        if children:  # a handler of its own, so that a child's death writes to the wakeup fd too
            signal.signal(signal.SIGCHLD, lambda *_: None)

    def _stop(self, _signum: int, _frame: Any) -> None:
        self.stop_requested = True

    def wait(self, timeout: float) -> None:
        """Return on the next signal, or after ``timeout`` seconds."""
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 4096)


@dataclass
class Child:
    """One supervised child: how to start it, its current process, and its exit history."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    exits: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    last_exit: str = ""

    def start(self) -> None:
        # A process group of its own (reached by killpg when a gunicorn master dies and orphans its
        # workers), but still serve's session: tools that account a service by session (CPU, ports) see it.
        self.process = subprocess.Popen(self.argv, env=self.env, process_group=0, preexec_fn=_die_with_parent)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when ``serve`` dies, even by SIGKILL, so a killed
    ``serve`` never leaves a headless API, listener or worker behind (prctl(2) PR_SET_PDEATHSIG).
    ``serve`` is single-threaded, which makes preexec_fn safe here."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def describe_exit(code: int) -> str:
    """``exit 1`` or ``signal SIGKILL`` (Popen reports a death by signal N as -N)."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


def _publish(children: dict[str, Child], metrics_dir: str) -> None:
    if not metrics_dir:
        return
    state = {
        name: ChildState(
            state="running" if child.running() else "restarting",
            pid=child.process.pid if child.process is not None and child.running() else None,
            restarts=child.restarts,
            last_exit=child.last_exit,
        )
        for name, child in children.items()
    }
    try:
        write_child_state(metrics_dir, state)
    except OSError as exc:  # readiness then shows no degraded part; supervision goes on
        log.warning("serve: child state not published (%s)", exc.strerror)


def _forget(pid: int, metrics_dir: str) -> None:
    if metrics_dir:
        multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def _reap(child: Child, now: float, metrics_dir: str, policy: SupervisionSettings) -> bool:
    """Record the death of ``child``; schedule its restart. False when it is crash-looping."""
    assert child.process is not None
    code = child.process.returncode
    pid = child.process.pid
    child.process = None
    _forget(pid, metrics_dir)
    # Its own children (a gunicorn master's workers) finish what they are doing and go.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    child.last_exit = describe_exit(code)
    child.exits.append(now)
    while child.exits and child.exits[0] < now - policy.crash_loop_window:
        child.exits.popleft()
    fields: dict[str, Any] = {
        "child": child.name,
        "pid": pid,
        "exit_code": code if code >= 0 else None,
        "signal": signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None,
        "restarts": child.restarts,
        "exits_in_window": len(child.exits),
    }
    if len(child.exits) >= policy.crash_loop_exits:
        log.error(
            "serve: %s exited %d times within %g s (last: %s); crash loop, stopping the service",
            child.name,
            len(child.exits),
            policy.crash_loop_window,
            child.last_exit,
            extra={"fields": fields},
        )
        return False
    delay = min(policy.backoff_first * 2 ** (len(child.exits) - 1), policy.backoff_max)
    child.restart_at = now + delay
    fields["restart_in_s"] = delay
    log.error(
        "serve: %s exited unexpectedly (%s); restarting it in %g s (restart %d)",
        child.name,
        child.last_exit,
        delay,
        child.restarts + 1,
        extra={"fields": fields},
    )
    return True


def supervise(children: dict[str, Child], metrics_dir: str, policy: SupervisionSettings | None = None) -> int:
    """``serve``'s process: start every child and restart one that dies (with backoff, see above) while
    the others keep running, until SIGTERM/SIGINT or a crash loop. Then SIGTERM every child and wait
    for each to finish what it is doing (gunicorn: in-flight requests; worker: the notification it is
    sending; MLLP: the messages being handled). Returns 0 after a requested stop in which every child
    exited cleanly, 1 otherwise."""
    policy = policy or SupervisionSettings()
    waiter = SignalWaiter(children=True)
    for child in children.values():
        child.start()
    _publish(children, metrics_dir)
    crash_loop = False
    while not waiter.stop_requested and not crash_loop:
        now = time.monotonic()
        changed = False
        for child in children.values():
            if child.process is not None and child.process.poll() is not None:
                changed = True
                if not _reap(child, now, metrics_dir, policy):
                    crash_loop = True
                    break
            elif child.process is None and child.restart_at is not None and child.restart_at <= now:
                child.restart_at = None
                child.restarts += 1
                child.start()
                changed = True
                assert child.process is not None
                log.info(
                    "serve: %s restarted (restart %d)",
                    child.name,
                    child.restarts,
                    extra={
                        "fields": {"child": child.name, "pid": child.process.pid, "restarts": child.restarts}
                    },
                )
        if changed:
            _publish(children, metrics_dir)
        if crash_loop:
            break
        due = [
            c.restart_at - now for c in children.values() if c.restart_at is not None and c.process is None
        ]
        waiter.wait(max(min([5.0, *due]), 0.0))
    for child in children.values():
        if child.running():
            assert child.process is not None
            child.process.terminate()
    clean = waiter.stop_requested and not crash_loop
    for name, child in children.items():
        if child.process is None:
            continue
        try:
            code = child.process.wait(timeout=GRACEFUL_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            log.error("serve: %s did not stop in time; killed", name)
            child.process.kill()
            code = child.process.wait()
        _forget(child.process.pid, metrics_dir)
        # -SIGTERM: our signal reached a child still starting (no handler yet, so nothing in flight).
        if code not in (0, -signal.SIGTERM):
            log.warning("serve: %s exited with status %s", name, code)
            clean = False
    if metrics_dir:  # no stale state for a process that shares the directory later
        with contextlib.suppress(OSError):
            (Path(metrics_dir) / CHILD_STATE_FILE).unlink()
    log.info("serve: stopped (%s)", "clean" if clean else "with errors")
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> None:
    """``python -m coordination_api.server --host H --port P --workers N --threads T``."""
    parser = argparse.ArgumentParser(prog="coordination_api.server")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    # The application's modules are imported (above) before gunicorn forks: each worker then only runs
    # create_app, and an early request does not wait for every import.
    settings = Settings.from_env()
    if settings.preload_definitions:
        validation.warm()
    run_gunicorn(args.host, args.port, args.workers, args.threads, settings.metrics_multiproc_dir)


if __name__ == "__main__":
    main()
