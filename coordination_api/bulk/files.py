"""Export files: where they live, how they are written, how they are served.

A job's files are ``<export dir>/<job id>/<name>.ndjson``. The job row's ``progress`` records each
file's committed length (bytes and lines): a download serves exactly that many bytes, so whatever a
stalled worker appended after its last checkpoint is never served; a worker that takes a job over
from an expired lease starts new files rather than appending to the previous holder's (which may
still be writing), and one that resumes after a clean release appends to them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from coordination_api.config import REPO_ROOT, ExportSettings

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
READ_BLOCK = 256 * 1024


def export_root(settings: ExportSettings) -> Path:
    return Path(settings.directory) if settings.directory else REPO_ROOT / "instance" / "exports"


def job_dir(settings: ExportSettings, job_id: str) -> Path:
    if not JOB_ID.match(job_id):  # never a path built from anything but our own ids
        raise ValueError("not a job id")
    return export_root(settings) / job_id


def remove_job_files(settings: ExportSettings, job_id: str) -> None:
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)


@dataclass
class FileState:
    """One file of a job: ``kind`` output | deleted | error (the manifest's three arrays)."""

    kind: str
    type: str
    name: str
    count: int = 0
    bytes: int = 0
    open: bool = True


@dataclass
class Progress:
    """How far a job got: the last resource pk looked at and the files, as committed."""

    last_pk: int = 0
    written: int = 0
    next_file: int = 1
    files: list[FileState] = field(default_factory=list)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str | None) -> Progress:
        if not text:
            return cls()
        data: dict[str, Any] = orjson.loads(text)
        files = [FileState(**f) for f in data.pop("files", [])]
        return cls(**data, files=files)

    def file(self, name: str) -> FileState | None:
        return next((f for f in self.files if f.name == name), None)


class FilesLostError(Exception):
    """A job's files are not (all) where its progress says: another worker wrote them elsewhere."""


class Writer:
    """Appends NDJSON lines to a job's files, one open file per (kind, type), rotated by size."""

    def __init__(
        self, directory: Path, progress: Progress, per_file: int, *, take_over: bool, generation: int
    ) -> None:
        self.directory = directory
        self.progress = progress
        self.per_file = max(1, per_file)
        self.generation = generation
        self.handles: dict[str, IO[bytes]] = {}
        self.stack = ExitStack()  # whatever happens, no handle is left open
        directory.mkdir(parents=True, exist_ok=True)
        for state in progress.files:
            path = directory / state.name
            if not path.is_file() or path.stat().st_size < state.bytes:
                raise FilesLostError(
                    f"export file {state.name} is missing or shorter than recorded: the workers must "
                    "share COORDINATION_EXPORT_DIR"
                )
            if not state.open:
                continue
            if take_over:
                # The previous holder may still be writing it: it ends at its committed length.
                state.open = False
            else:
                with open(path, "ab") as handle:  # cut what a failed slice wrote after its checkpoint
                    handle.truncate(state.bytes)

    def _current(self, kind: str, rtype: str) -> FileState:
        for state in self.progress.files:
            if state.open and state.kind == kind and state.type == rtype:
                return state
        suffix = {"output": "", "deleted": ".deleted", "error": ".error"}[kind]
        number = self.progress.next_file
        self.progress.next_file += 1
        name = f"{rtype}{suffix}.{self.generation}-{number}.ndjson"
        state = FileState(kind, rtype, name)
        self.progress.files.append(state)
        return state

    def write(self, kind: str, rtype: str, line: bytes) -> None:
        state = self._current(kind, rtype)
        handle = self.handles.get(state.name)
        if handle is None:
            path = self.directory / state.name
            # Held across calls; closed by _close()/close()/abandon() (and the ExitStack in any case).
            handle = open(path, "ab", buffering=1 << 20)  # noqa: SIM115
            self.handles[state.name] = self.stack.enter_context(handle)
        handle.write(line)
        handle.write(b"\n")
        state.count += 1
        state.bytes += len(line) + 1
        if state.count >= self.per_file:
            state.open = False
            self._close(state.name)

    def _close(self, name: str) -> None:
        handle = self.handles.pop(name, None)
        if handle is not None:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()

    def sync(self) -> None:
        """Everything written so far is on disk (before the checkpoint that records it commits)."""
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self, *, final: bool) -> None:
        for name in list(self.handles):
            self._close(name)
        self.stack.close()
        if final:
            for state in self.progress.files:
                state.open = False

    def abandon(self) -> None:
        """The lease was lost: stop writing, without touching what another worker now owns."""
        self.handles.clear()
        self.stack.close()


def stream(path: Path, length: int) -> Iterator[bytes]:
    """The first ``length`` bytes of ``path`` (the committed part), a block at a time."""
    with open(path, "rb") as handle:
        left = length
        while left > 0:
            block = handle.read(min(READ_BLOCK, left))
            if not block:
                return
            left -= len(block)
            yield block
