"""Small file-system primitives shared by everything netra-rm writes.

Two rules. First, for every file another process may read while we write it: write a
temp file in the same directory, fsync it, ``os.replace`` it over the target; a reader
then sees the old file or the new one, never half of one. Second, for every file or
directory netra-rm creates beside the ledger, where other local users may also write
(a shared temporary directory): create it exclusively, never follow a symbolic link,
give temp files unpredictable names, and use something that already exists only when it
belongs to the current user (or root) and nobody else may write it. Several users of one
group may share a ledger in a group-owned setgid directory (``group_shared``): files are
then made 0660 and group members' files are accepted.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from pathlib import Path

from netra_rm.errors import UnsafePathError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _describe(st: os.stat_result) -> str:
    return f"owned by {_owner_name(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}"


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0)


def _group_ok(st: os.stat_result) -> bool:
    """Is ``st``'s group one of this process's groups?"""
    return st.st_gid == os.getegid() or st.st_gid in os.getgroups()


def check_owned(st: os.stat_result, path: str | Path, *, group_shared: bool = False, what: str = "file") -> None:
    """Refuse an existing file or directory that another user controls: it must belong to
    the current user or root (or, with ``group_shared``, be in one of the user's groups)
    and nobody else may write it (group members may, with ``group_shared``)."""
    mode = stat.S_IMODE(st.st_mode)
    owner_ok = _trusted_owner(st) or (group_shared and _group_ok(st))
    writable_by_others = bool(mode & stat.S_IWOTH)
    writable_by_group = bool(mode & stat.S_IWGRP) and not (group_shared and _group_ok(st))
    if owner_ok and not writable_by_others and not writable_by_group:
        return
    fix = (f"Remove it if it is not yours (rm -r {path}), or make it yours and private "
           f"(chown {_owner_name(os.geteuid())} {path}; chmod go-w {path}); to share a ledger with your group, "
           "see the README's section on shared directories.")
    raise UnsafePathError(f"netra-rm refuses the {what} {path}: it is {_describe(st)}, so another user could "
                          "change it.", remediation=[fix])


def ensure_private_dir(path: str | Path, *, group_shared: bool = False) -> Path:
    """Create ``path`` (0700, or 02770 when ``group_shared``) with its parents, or accept
    an existing directory only when :func:`check_owned` does; a symbolic link is refused."""
    target = Path(path)
    mode = 0o2770 if group_shared else 0o700
    try:
        os.mkdir(target, mode)
        if group_shared:
            os.chmod(target, mode)  # the umask may have taken the group bits
        return target
    except FileExistsError:
        pass
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return ensure_private_dir(target, group_shared=group_shared)
    st = os.lstat(target)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"netra-rm refuses {target}: it is not a directory but "
                              f"{'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'a file'}.",
                              remediation=[f"Remove it (rm {target}) and run the command again."])
    check_owned(st, target, group_shared=group_shared, what="directory")
    return target


def check_parent(directory: str | Path) -> None:
    """A directory the user chose to keep a ledger in: it may be shared (world-writable)
    only with the sticky bit, so that nobody can replace our files in it."""
    try:
        st = os.stat(directory)
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise UnsafePathError(f"netra-rm refuses the directory {directory}: anyone may write in it and it lacks the "
                              "sticky bit, so another user could replace the ledger's files.",
                              remediation=[f"Keep the ledger in a private directory, or add the sticky bit: "
                                           f"chmod +t {directory}"])


def open_private(path: str | Path, flags: int, *, mode: int = 0o600, group_shared: bool = False) -> int:
    """``os.open`` that never follows a symbolic link, creates files 0600 (0660 when
    ``group_shared``) and accepts an existing file only when :func:`check_owned` does."""
    if group_shared and mode == 0o600:
        mode = 0o660
    try:
        fd = os.open(path, flags | NOFOLLOW | CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"netra-rm refuses {path}: it is a symbolic link.",
                                  remediation=[f"Remove the link (rm {path}) and run the command again."]) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISFIFO(st.st_mode):
            raise UnsafePathError(f"netra-rm refuses {path}: it is not a regular file.",
                                  remediation=[f"Remove it (rm {path}) and run the command again."])
        check_owned(st, path, group_shared=group_shared)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_exclusive_temp(directory: str | Path, prefix: str, *, mode: int = 0o600) -> tuple[int, Path]:
    """A new file in ``directory`` with an unpredictable name starting with ``prefix``
    (``O_EXCL``: never one that someone created first); its fd and path."""
    for _ in range(16):
        path = Path(directory) / f"{prefix}{secrets.token_hex(8)}.tmp"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a temporary file", str(directory))


def write_atomically(path: str | Path, data: bytes, *, mode: int = 0o600, fsync: bool = True,
                     make_parents: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically; raises ``OSError`` with the target
    unchanged and no temp file left behind. The temp name never ends like the target,
    so a directory watcher (node_exporter's ``*.prom``) never reads it."""
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = create_exclusive_temp(target.parent, f".{target.name}.{os.getpid()}.{threading.get_ident()}.", mode=mode)
    try:
        try:
            write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return target


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def unlink_quietly(path: str | Path) -> None:
    """Remove ``path`` if it is there; never raises."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable; best effort, never raises."""
    try:
        fd = os.open(directory, os.O_RDONLY | CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
