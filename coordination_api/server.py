"""Run the WSGI app under gunicorn (threads per worker; more workers scale out).

``coordination serve`` starts this module as a child process (``python -m coordination_api.server``)
rather than calling gunicorn in its own process: the child starts with ``PROMETHEUS_MULTIPROC_DIR``
already in its environment, which prometheus_client needs before its first import (metrics.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import threading
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


def supervise(children: dict[str, subprocess.Popen[bytes]], metrics_dir: str) -> int:
    """``serve``'s process: wait for SIGTERM/SIGINT (or a child's death), then SIGTERM every child and
    wait for each to finish what it is doing (gunicorn: in-flight requests; worker: its pass; MLLP:
    the messages being handled). Returns 0 after a requested stop in which every child exited cleanly."""
    wake = threading.Event()
    requested = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        requested.set()
        wake.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGCHLD, lambda *_: wake.set())
    while not requested.is_set() and all(child.poll() is None for child in children.values()):
        wake.wait(1.0)  # woken at once by a signal; the timeout only guards a missed SIGCHLD
        wake.clear()
    died = [name for name, child in children.items() if child.poll() is not None]
    if not requested.is_set():
        log.error("serve: %s exited unexpectedly; stopping the others", ", ".join(died))
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    clean = requested.is_set()
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
        if code:
            log.warning("serve: %s exited with status %s", name, code)
        clean = clean and code == 0
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
    from coordination_api.config import Settings

    metrics_dir = Settings.from_env().metrics_multiproc_dir
    run_gunicorn(args.host, args.port, args.workers, args.threads, metrics_dir)


if __name__ == "__main__":
    main()
