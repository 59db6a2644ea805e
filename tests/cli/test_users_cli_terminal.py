"""Review 20 finding 9: ``coordination users passwd`` on a terminal echoed the new password (it read a line of
standard input with the terminal's echo on), so it lands on screen, in scroll-back and session
recordings. A real process on a pseudo-terminal, against the test database."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from flask import Flask

from coordination_api.accounts import create_practitioner_user
from tests.support.auth import PASSWORD

SECRET = "typed-new-password-789xyz"


def test_users_passwd_on_a_terminal_does_not_echo_the_password(app: Flask, database_url: str) -> None:
    create_practitioner_user(app, "dr.echo", "10101010109", PASSWORD, "Echo", "Ada")
    app.extensions["coordination"].repo.engine.dispose()
    master, slave = pty.openpty()
    env = {**os.environ, "COORDINATION_DATABASE_URL": database_url, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from coordination_api.cli import main; main()",
            "users",
            "passwd",
            "dr.echo",
            "--password-stdin",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if not sent and b"password" in seen:
            os.write(master, SECRET.encode() + b"\n")
            sent = True
        if process.poll() is not None and not ready:
            break
    process.wait(30)
    os.close(master)
    assert sent, seen
    assert b"changed" in seen, seen
    assert SECRET.encode() not in seen, "the new password was echoed on the terminal"
