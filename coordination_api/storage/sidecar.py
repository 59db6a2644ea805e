"""Files the server makes beside a SQLite database (the writer gate's lock file, the doorbell's
directory and socket) follow the database file: its owner and its mode.

SQLite does the same for its -wal and -shm files (os_unix.c: findCreateFileMode, robustFchown): an
operator command run as root must not leave behind a file that the service user, who owns the database,
cannot open (review 22 F3). Whoever may write the database may use these files, and nobody else.
"""

from __future__ import annotations

import os
import stat


def database_stat(database: str) -> os.stat_result | None:
    """The database file's owner and mode (None before the file exists)."""
    try:
        return os.stat(database)
    except OSError:
        return None


def file_mode(database: str) -> int:
    """The read/write bits of the database file (0600 before it exists)."""
    st = database_stat(database)
    return stat.S_IMODE(st.st_mode) & 0o666 if st else 0o600


def open_beside(database: str, path: str, access: int = os.O_RDWR) -> int:
    """Open ``path`` (created if missing) with the database's owner and mode. ``access``: O_RDONLY for
    a file that is only flock()ed (that needs no write permission: a lock file root made before the
    database was handed to the service user still opens). Raises OSError."""
    mode = file_mode(database)
    # O_NOFOLLOW: root must never chown what a link in the database's directory points at.
    fd = os.open(path, access | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        adopt(database, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def adopt(database: str, target: int | str, *, directory: bool = False) -> None:
    """Give ``target`` (an open fd or a path) the database's owner (when running as root, as SQLite)
    and its mode (the umask may have taken bits the database has: a group that writes it)."""
    db = database_stat(database)
    if db is None:
        return
    st = os.fstat(target) if isinstance(target, int) else os.lstat(target)
    if stat.S_ISLNK(st.st_mode):  # what we just made: a link is someone else's (chmod would follow it)
        raise PermissionError(f"{target} is a symbolic link")
    euid = os.geteuid()
    if euid == 0 and (st.st_uid, st.st_gid) != (db.st_uid, db.st_gid):
        if isinstance(target, int):
            os.fchown(target, db.st_uid, db.st_gid)
        else:
            os.lchown(target, db.st_uid, db.st_gid)
    mode = dir_mode(db) if directory else stat.S_IMODE(db.st_mode) & 0o666
    if (euid == 0 or st.st_uid == euid) and stat.S_IMODE(st.st_mode) != mode:
        if isinstance(target, int):
            os.fchmod(target, mode)
        else:
            os.chmod(target, mode)


def dir_mode(db: os.stat_result | None) -> int:
    """A private directory's mode: rwx for each class (owner, group, others) that may write the
    database, none for the others (0700 for a database writable by its owner only)."""
    mode = 0o700
    if db is not None:
        if db.st_mode & stat.S_IWGRP:
            mode |= 0o070
        if db.st_mode & stat.S_IWOTH:
            mode |= 0o007
    return mode


def private_directory(database: str, path: str, *, create: bool = True) -> None:
    """Make ``path`` a directory only the database's writers can enter (created if missing, with the
    database's owner), or raise PermissionError when the one there is not: someone else's (another
    local user may have made it first in a shared directory), a link, or open to more. ``create``
    False: only the check (OSError when it is missing)."""
    db = database_stat(database)
    allowed = dir_mode(db)
    if create:
        try:
            os.mkdir(path, allowed)
        except FileExistsError:
            pass
        else:
            adopt(database, path, directory=True)
    st = os.lstat(path)
    owners = {os.geteuid()} | ({db.st_uid} if db is not None else set())
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners or stat.S_IMODE(st.st_mode) & ~allowed:
        raise PermissionError(
            f"{path} is not a private directory of the database's owner "
            f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}): remove it"
        )
