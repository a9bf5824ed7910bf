"""Who a server runs as, and files nobody else reads: accounts to drop to, private directories, logs 0640, atomic
writes with a fixed mode (credentials, configs, pid files).

Standard library only.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

#: The umask of every process deploy starts: what a server or a node creates is never readable by others.
CHILD_UMASK = 0o027
#: Logs: the owner writes, its group reads (the broker's group for the broker's own log), nobody else.
LOG_MODE = 0o640
#: Accounts mosquitto may drop to when deploy runs as root, in order of preference: Debian's own, then nobody.
BROKER_ACCOUNTS: tuple[str, ...] = ("mosquitto", "nobody")


@dataclass(frozen=True)
class Account:
    """A local user account a server runs as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> Account | None:
        """The account called ``name``, or None if this machine has none."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def groups(self) -> frozenset[int]:
        """Its primary group and every group that lists it as a member."""
        return frozenset({self.gid, *(g.gr_gid for g in grp.getgrall() if self.name in g.gr_mem)})

    def may_enter(self, path: Path) -> bool:
        """True if it may search (``x``) the directory ``path`` by its permission bits (it is not root)."""
        st = path.stat()
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in self.groups():
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


def running_as_root() -> bool:
    """True if this process may change owners (and would otherwise run the servers as root)."""
    return os.geteuid() == 0


def first_blocked(path: Path, account: Account) -> Path | None:
    """The first existing directory on the way from ``/`` to ``path`` (inclusive) that ``account`` may not enter,
    or None if it reaches ``path`` (directories that do not exist yet are created 0755 by ``mkdir``)."""
    path = path.resolve()
    for folder in (*reversed(path.parents), path):
        if folder.is_dir() and not account.may_enter(folder):
            return folder
    return None


def process_user(pid: int) -> str | None:
    """The effective user of process ``pid`` by name (its uid if unnamed), or None if it is unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[2])
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(uid).pw_name
            return str(uid)
    return None


def private_dir(path: Path, mode: int = 0o700, group: Account | None = None) -> Path:
    """Create ``path`` (and missing parents) and set its mode; with ``group`` (and root) its group too."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)  # never looser than mode, not even before the chmod
    if group is not None and running_as_root():
        os.chown(path, -1, group.gid)
    path.chmod(mode)
    return path


def chown_tree(path: Path, account: Account) -> None:
    """Give ``path`` and everything below it to ``account`` (root only; symlinks are not followed)."""
    for folder, dirs, files in os.walk(path):
        for name in (folder, *(os.path.join(folder, entry) for entry in (*dirs, *files))):
            os.chown(name, account.uid, account.gid, follow_symlinks=False)


def open_log(path: Path, owner: Account | None = None) -> BinaryIO:
    """Open a log for appending, mode :data:`LOG_MODE` (a looser existing file is tightened), given to ``owner``
    if that is set (the account a server that opens the file itself runs as)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & ~LOG_MODE:
            os.fchmod(fd, mode & LOG_MODE)
        if owner is not None and running_as_root():
            os.fchown(fd, owner.uid, owner.gid)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def write_atomic(path: Path, text: str, mode: int = 0o640, group: Account | None = None) -> None:
    """Write ``text`` to ``path`` via a temporary file created with ``mode`` (so never readable by others, not even
    briefly); with ``group`` (and root) the file belongs to that account's group."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), mode)  # the process umask must not loosen or tighten it
            if group is not None and running_as_root():
                os.fchown(handle.fileno(), -1, group.gid)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # a crash must not leave an empty credentials file behind the rename
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
