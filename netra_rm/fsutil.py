"""File-system primitives shared by everything netra-rm writes.

Two rules live here and nowhere else.

**Atomic replacement.** A file another process may read while we write it is written as
a temp file in the same directory, fsynced, and ``os.replace``-d over the target. A
reader then sees the old file or the new one, never half of one.

**Safe in a shared directory.** A ledger may live where other users can write (``/tmp``,
a 1777 directory), and a cache may sit under a shared ``XDG_CACHE_HOME``. So every file
netra-rm creates there is opened with ``O_NOFOLLOW`` (a planted symbolic link is never
followed), created with ``O_EXCL`` under an unpredictable name when it is temporary, and
a file or directory that exists already is used only when it belongs to the current user
(or root) and nobody else may write to it. Anything else raises :class:`UnsafePathError`
(exit 5) naming the path, its owner and mode, and the fix.

Several users of one group may share a ledger directory on purpose: the directory is
group-owned with the setgid bit (``install -d -m 2770 -g ci DIR``), files are created
0660, and ``group_shared=True`` (``NETRA_RM_SHARED_GROUP=1``) lets group members' files
and the group-writable directory pass the checks. A world-writable file or directory
never does.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from netra_rm.errors import UnsafePathError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)

#: Modes netra-rm creates files and directories with, alone or shared within a group.
PRIVATE_FILE_MODE = 0o600
SHARED_FILE_MODE = 0o660
PRIVATE_DIR_MODE = 0o700
SHARED_DIR_MODE = 0o2770

_KINDS = {stat.S_IFREG: "a regular file", stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO",
          stat.S_IFLNK: "a symbolic link", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


def file_mode(*, group_shared: bool = False) -> int:
    """The mode netra-rm creates a file with: 0600, or 0660 in a group-shared directory."""
    return SHARED_FILE_MODE if group_shared else PRIVATE_FILE_MODE


# -- who may be trusted -----------------------------------------------------------------------

def _user_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def _my_groups() -> set[int]:
    return {os.getegid(), *os.getgroups()}


def _in_group(uid: int, gid: int) -> bool:
    """True when user ``uid`` belongs to group ``gid`` (as its primary group or a member)."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid)
        return user.pw_gid == gid or user.pw_name in grp.getgrgid(gid).gr_mem
    except (ImportError, KeyError):
        return False


def _trusted_owner(st: os.stat_result, group_shared: bool) -> bool:
    """Ours or root's; with ``group_shared`` also a fellow member's of one of our groups."""
    if st.st_uid in (os.geteuid(), 0):
        return True
    return group_shared and st.st_gid in _my_groups() and _in_group(st.st_uid, st.st_gid)


def _describe(st: os.stat_result) -> str:
    return (f"owned by {_user_name(st.st_uid)}, group {_group_name(st.st_gid)}, "
            f"mode {stat.S_IMODE(st.st_mode):04o}")


def _problem(st: os.stat_result, *, group_shared: bool, directory: bool) -> tuple[str, str] | None:
    """Why ``st`` may not be used (what is wrong, how to fix it), or None when it may."""
    mode = stat.S_IMODE(st.st_mode)
    if not _trusted_owner(st, group_shared):
        return ("is not yours", "remove it (as its owner or root), or point netra-rm at a directory of your own")
    if mode & stat.S_IWOTH:
        return ("is writable by every user", "run `chmod o-w {path}`, or remove it")
    if mode & stat.S_IWGRP:
        setgid_dir = not directory or mode & stat.S_ISGID
        if not (group_shared and setgid_dir and st.st_gid in _my_groups()):
            if group_shared:
                return ("is group-writable but not a setgid directory of one of your groups",
                        "run `chgrp GROUP {path}` and `chmod g+s {path}` for the shared group, or "
                        "`chmod g-w {path}`")
            return ("is group-writable", "run `chmod g-w {path}`, or set NETRA_RM_SHARED_GROUP=1 if the group "
                                         "is meant to share it (a setgid directory, see the README)")
    if not directory and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return (f"has {st.st_nlink} hard links, so it may be another file in disguise", "remove it")
    return None


def _refuse(path: str | Path, st: os.stat_result, why: str, fix: str) -> UnsafePathError:
    return UnsafePathError(f"{path} {why} ({_describe(st)}); {fix.format(path=path)}, then run the command "
                           "again.", path=str(path))


def check_owned_file(fd_or_stat: int | os.stat_result, path: str | Path, *, group_shared: bool = False,
                     kind: int | None = stat.S_IFREG) -> os.stat_result:
    """Check an existing file before using it: owned by the current user or root (or, with
    ``group_shared``, a member of one of our groups), not writable by others (by the group
    only when ``group_shared``), a single link, and of ``kind`` (None: any). Returns its
    status; raises :class:`UnsafePathError` otherwise."""
    st = os.fstat(fd_or_stat) if isinstance(fd_or_stat, int) else fd_or_stat
    if kind is not None and stat.S_IFMT(st.st_mode) != kind:
        found = _KINDS.get(stat.S_IFMT(st.st_mode), "an unusual file")
        raise _refuse(path, st, f"is {found}, not {_KINDS.get(kind, 'the expected kind')}", "remove it")
    problem = _problem(st, group_shared=group_shared, directory=False)
    if problem is not None:
        raise _refuse(path, st, *problem)
    return st


def check_private_dir(path: str | Path, *, group_shared: bool = False) -> os.stat_result:
    """Check an existing directory as :func:`ensure_private_dir` does; its status."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, st, "is a symbolic link", "remove it (netra-rm does not follow links in places "
                                                     "others may write)")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, st, f"is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a directory')}, not a "
                                "directory", "remove it")
    problem = _problem(st, group_shared=group_shared, directory=True)
    if problem is not None:
        raise _refuse(path, st, *problem)
    return st


# -- directories ------------------------------------------------------------------------------

def make_missing_dirs(path: str | Path, *, group_shared: bool = False) -> None:
    """Create ``path`` and its missing parents (0700, or 2770 when ``group_shared``);
    directories that exist already are left as they are (and not judged)."""
    mode = SHARED_DIR_MODE if group_shared else PRIVATE_DIR_MODE
    missing: list[Path] = []
    current = Path(path)
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode & 0o777)
        except FileExistsError:
            continue  # made meanwhile by someone else: judged by whoever uses it
        _fix_mode(directory, mode)


def _fix_mode(directory: Path, mode: int) -> None:
    """Give a directory we just made its exact mode (mkdir drops setgid and applies the umask)."""
    try:
        fd = os.open(directory, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC)
    except OSError:
        return
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def ensure_private_dir(path: str | Path, *, group_shared: bool = False) -> Path:
    """``path`` as a directory only we (or root) can write: created 0700 (2770 when
    ``group_shared``) with missing parents, or accepted when it exists, is no symbolic
    link, belongs to us or root and is not writable by others (group-writable only when
    ``group_shared`` and it is a setgid directory of one of our groups). Raises
    :class:`UnsafePathError` otherwise."""
    directory = Path(path)
    if not os.path.lexists(directory):
        make_missing_dirs(directory, group_shared=group_shared)
    check_private_dir(directory, group_shared=group_shared)
    return directory


# -- files ------------------------------------------------------------------------------------

def open_private(path: str | Path, flags: int, *, mode: int = PRIVATE_FILE_MODE, group_shared: bool = False,
                 kind: int | None = stat.S_IFREG) -> int:
    """``os.open`` for files in places others may write: never follows a symbolic link,
    never blocks on a planted FIFO, closes on exec. A file it creates gets exactly
    ``mode`` (0660 when ``group_shared``); a file that existed is first checked with
    :func:`check_owned_file` (and only then truncated, when ``O_TRUNC`` was asked).
    Raises :class:`UnsafePathError`, or ``OSError`` as ``os.open`` does."""
    if group_shared:
        mode |= 0o060
    truncate = bool(flags & os.O_TRUNC)
    wanted_nonblock = bool(flags & NONBLOCK)
    base = (flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | NOFOLLOW | CLOEXEC | NONBLOCK
    for _ in range(10):
        if flags & os.O_CREAT:
            try:
                fd = _open(path, base | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
            else:
                try:
                    os.fchmod(fd, mode)  # exactly, whatever the umask
                except OSError:
                    os.close(fd)
                    raise
                return _blocking(fd, wanted_nonblock)
        try:
            fd = _open(path, base, mode)
        except FileNotFoundError:
            if flags & os.O_CREAT:
                continue  # removed between the two opens: create it after all
            raise
        try:
            check_owned_file(fd, path, group_shared=group_shared, kind=kind)
            if truncate:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return _blocking(fd, wanted_nonblock)
    raise OSError(errno.EAGAIN, "the file kept appearing and disappearing", str(path))


def _open(path: str | Path, flags: int, mode: int) -> int:
    try:
        return os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symbolic link
            try:
                st = os.lstat(path)
            except OSError:
                raise exc from None
            if stat.S_ISLNK(st.st_mode):
                raise _refuse(path, st, "is a symbolic link", "remove it (netra-rm does not follow links in "
                                                             "places others may write)") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads, opened for writing
            st = os.lstat(path)
            raise _refuse(path, st, f"is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}",
                          "remove it") from None
        raise


def _blocking(fd: int, keep_nonblock: bool) -> int:
    if NONBLOCK and not keep_nonblock:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~NONBLOCK)
    return fd


def create_exclusive_temp(directory: str | Path, prefix: str, *, suffix: str = ".tmp",
                          mode: int = PRIVATE_FILE_MODE) -> tuple[int, Path]:
    """A new file in ``directory`` under an unpredictable name (``prefix`` + 16 random hex
    digits + ``suffix``), opened write-only with ``O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC``
    and given exactly ``mode``. Another user cannot have created it first, nor guess it."""
    folder = Path(directory)
    for _ in range(100):
        path = folder / f"{prefix}{os.urandom(8).hex()}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode & 0o777)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, mode)
        except OSError:
            os.close(fd)
            unlink_quietly(path)
            raise
        return fd, path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))


def write_atomically(path: str | Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE, fsync: bool = True,
                     make_parents: bool = False, group_shared: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically; raises ``OSError`` with the target
    unchanged and no temp file left behind. The temp file is created exclusively under an
    unpredictable name that never ends like the target, so neither another user nor a
    directory watcher (node_exporter's ``*.prom``) can get at it. ``make_parents``
    creates missing directories (0700, or 2770 when ``group_shared``)."""
    target = Path(path)
    if make_parents:
        make_missing_dirs(target.parent, group_shared=group_shared)
    fd, tmp = create_exclusive_temp(target.parent, f".{target.name}.",
                                    mode=mode | 0o060 if group_shared else mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return target


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


def check_parent(directory: str | Path) -> None:
    """A directory the user chose to keep a ledger in: it may be shared (world-writable,
    like /tmp) only with the sticky bit, so that nobody can replace our files in it."""
    try:
        st = os.stat(directory)
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise UnsafePathError(f"netra-rm refuses the directory {directory}: anyone may write in it and it lacks the "
                              "sticky bit, so another user could replace the ledger's files.", path=str(directory),
                              remediation=[f"Keep the ledger in a private directory, or add the sticky bit: "
                                           f"chmod +t {directory}"])


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
