"""Run the WSGI app under gunicorn (threads per worker; more workers scale out).

``coordination serve`` starts this module as a child process (``python -m coordination_api.server``)
rather than calling gunicorn in its own process: the child starts with ``PROMETHEUS_MULTIPROC_DIR``
already in its environment, which prometheus_client needs before its first import (metrics.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
from typing import Any

from gunicorn.app.base import BaseApplication

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
        from coordination_api.app import create_app

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
    }
    if metrics_dir:
        options["child_exit"] = _forget_worker(metrics_dir)
    _Gunicorn(options).run()


def _forget_worker(metrics_dir: str) -> Any:
    """gunicorn's child_exit hook: a dead worker's live gauges (DB pool) no longer count."""

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

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


def supervise(children: dict[str, subprocess.Popen[bytes]], metrics_dir: str) -> int:
    """``serve``'s process: wait for SIGTERM/SIGINT (or a child's death), then SIGTERM every child and
    wait for each to finish what it is doing (gunicorn: in-flight requests; worker: the notification
    it is sending; MLLP: the messages being handled). Returns 0 after a requested stop in which every
    child exited cleanly."""
    waiter = SignalWaiter(children=True)
    while not waiter.stop_requested and all(child.poll() is None for child in children.values()):
        waiter.wait(5.0)
    requested = waiter.stop_requested
    if not requested:
        died = [name for name, child in children.items() if child.poll() is not None]
        log.error("serve: %s exited unexpectedly; stopping the others", ", ".join(died))
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    clean = requested
    for name, child in children.items():
        try:
            code = child.wait(timeout=GRACEFUL_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            log.error("serve: %s did not stop in time; killed", name)
            child.kill()
            code = child.wait()
        if metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(child.pid, metrics_dir)  # type: ignore[no-untyped-call]
        # -SIGTERM: our signal reached a child still starting (no handler yet, so nothing in flight).
        if code not in (0, -signal.SIGTERM):
            log.warning("serve: %s exited with status %s", name, code)
            clean = False
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
    # Import the application's modules before gunicorn forks (it binds its socket first): each worker
    # then only runs create_app, and an early request does not wait for every import.
    import coordination_api.app  # noqa: F401
    from coordination_api.config import Settings

    metrics_dir = Settings.from_env().metrics_multiproc_dir
    run_gunicorn(args.host, args.port, args.workers, args.threads, metrics_dir)


if __name__ == "__main__":
    main()
