"""The primitives for files in places other users may write (netra_rm.fsutil): what they
create, what they accept, and what they refuse with exit 5 and one sentence."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from netra_rm.errors import ExitCode, UnsafePathError
from netra_rm.fsutil import check_owned_file, create_exclusive_temp, ensure_private_dir, open_private, write_atomically

from hostile import LocalUser


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def wide_umask() -> object:
    """A umask that would leave files group- and world-writable: modes must not depend on it."""
    old = os.umask(0)
    yield
    os.umask(old)


# -- directories ---------------------------------------------------------------------------

def test_ensure_private_dir_creates_it_and_its_parents_0700(tmp_path: Path, wide_umask: object) -> None:
    target = tmp_path / "a" / "b" / "logs"
    assert ensure_private_dir(target) == target
    assert _mode(target) == 0o700 and _mode(tmp_path / "a") == 0o700
    ensure_private_dir(target)  # an existing private directory is accepted


def test_ensure_private_dir_group_shared_is_setgid_2770(tmp_path: Path, wide_umask: object) -> None:
    target = tmp_path / "shared"
    ensure_private_dir(target, group_shared=True)
    assert _mode(target) == 0o2770
    ensure_private_dir(target, group_shared=True)
    with pytest.raises(UnsafePathError, match="group-writable"):
        ensure_private_dir(target)  # not shared: a group-writable directory is refused


@pytest.mark.parametrize(("mode", "words"), [(0o777, "is writable by every user"), (0o775, "is group-writable"),
                                             (0o2777, "is writable by every user")])
def test_ensure_private_dir_refuses_a_directory_others_may_write(tmp_path: Path, mode: int, words: str) -> None:
    target = tmp_path / "logs"
    target.mkdir()
    os.chmod(target, mode)
    with pytest.raises(UnsafePathError) as info:
        ensure_private_dir(target)
    message = str(info.value)
    assert message.startswith(f"{target} {words} (owned by root (uid 0), group root, mode {mode:04o});")
    assert f"chmod {'o' if mode & 0o002 else 'g'}-w {target}" in message
    assert message.endswith("then run the command again.") and info.value.exit_code == ExitCode.LEDGER
    if mode & 0o002:
        with pytest.raises(UnsafePathError):
            ensure_private_dir(target, group_shared=True)  # never world-writable


def test_ensure_private_dir_refuses_a_symlink_and_another_users_directory(tmp_path: Path,
                                                                          other_user: LocalUser) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, other_user.uid, other_user.gid)
    with pytest.raises(UnsafePathError, match=rf"is not yours \(owned by {other_user.name} \(uid "):
        ensure_private_dir(theirs)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        ensure_private_dir(link)


def test_group_shared_trusts_a_member_of_the_group_only(tmp_path: Path, other_user: LocalUser) -> None:
    """A shared directory made by a fellow member is fine; made by an outsider, it is not."""
    made_by_member = tmp_path / "by-member"
    made_by_member.mkdir()
    os.chown(made_by_member, other_user.uid, 0)  # in our group (root), but is the user in it?
    os.chmod(made_by_member, 0o2770)
    with pytest.raises(UnsafePathError, match="is not yours"):
        ensure_private_dir(made_by_member, group_shared=True)  # the other user is not in group root
    os.chown(made_by_member, other_user.uid, other_user.gid)
    with pytest.raises(UnsafePathError):
        ensure_private_dir(made_by_member, group_shared=True)  # and we are not in theirs


# -- files ---------------------------------------------------------------------------------

def test_open_private_creates_exactly_0600_or_0660(tmp_path: Path, wide_umask: object) -> None:
    os.close(open_private(tmp_path / "a.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    assert _mode(tmp_path / "a.log") == 0o600
    os.close(open_private(tmp_path / "b.log", os.O_WRONLY | os.O_CREAT, group_shared=True))
    assert _mode(tmp_path / "b.log") == 0o660
    fd = open_private(tmp_path / "a.log", os.O_WRONLY | os.O_APPEND)  # an existing own file is used
    os.write(fd, b"appended\n")
    os.close(fd)
    assert (tmp_path / "a.log").read_bytes() == b"appended\n"


def test_open_private_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "service.log"
    link.symlink_to(victim)
    for flags in (os.O_WRONLY | os.O_CREAT | os.O_APPEND, os.O_RDONLY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
        with pytest.raises(UnsafePathError, match=rf"^{link} is a symbolic link"):
            open_private(link, flags)
    assert victim.read_text() == "precious\n"


def test_open_private_refuses_files_others_made_or_may_write(tmp_path: Path, other_user: LocalUser) -> None:
    theirs = tmp_path / "theirs.log"
    theirs.write_text("planted\n")
    os.chown(theirs, other_user.uid, other_user.gid)
    with pytest.raises(UnsafePathError, match=rf"is not yours \(owned by {other_user.name}"):
        open_private(theirs, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert theirs.read_text() == "planted\n"  # refused before it was truncated
    mine = tmp_path / "mine.log"
    mine.write_text("x")
    os.chmod(mine, 0o666)
    with pytest.raises(UnsafePathError, match="writable by every user"):
        open_private(mine, os.O_RDONLY)
    os.chmod(mine, 0o620)
    with pytest.raises(UnsafePathError, match="group-writable"):
        open_private(mine, os.O_RDONLY)
    os.close(open_private(mine, os.O_RDONLY, group_shared=True))


def test_open_private_refuses_a_hard_link_and_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    original = tmp_path / "original"
    original.write_text("secret\n")
    os.link(original, tmp_path / "linked.log")
    with pytest.raises(UnsafePathError, match="has 2 hard links"):
        open_private(tmp_path / "linked.log", os.O_WRONLY | os.O_APPEND)
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def attempt() -> None:
        try:
            open_private(fifo, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            done.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "opening a planted FIFO blocked"
    assert done and isinstance(done[0], UnsafePathError) and "is a FIFO" in str(done[0])
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(UnsafePathError, match="is a directory, not a regular file"):
            check_owned_file(fd, tmp_path)
    finally:
        os.close(fd)


def test_create_exclusive_temp_names_are_unpredictable_and_exclusive(tmp_path: Path, wide_umask: object) -> None:
    made = [create_exclusive_temp(tmp_path, ".ledger.json.") for _ in range(20)]
    names = {path.name for _, path in made}
    assert len(names) == 20 and all(n.startswith(".ledger.json.") and n.endswith(".tmp") for n in names)
    for fd, path in made:
        os.close(fd)
        assert _mode(path) == 0o600


def test_write_atomically_replaces_the_target_and_never_writes_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "metrics.prom"
    # the old temp name was predictable: a link planted there made us write through it
    for name in (f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp", f".{target.name}.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_atomically(target, b"new\n", mode=0o644)
    assert target.read_bytes() == b"new\n" and _mode(target) == 0o644
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == ["metrics.prom", "victim"]
    write_atomically(tmp_path / "new" / "deep" / "f", b"x", make_parents=True)
    assert _mode(tmp_path / "new") == 0o700


def test_group_shared_accepts_a_fellow_members_setgid_directory(tmp_path: Path, other_user: LocalUser) -> None:
    """Seen from a process in the other user's group: their 2770 directory and 0660 file pass."""
    import subprocess
    import sys

    shared = tmp_path / "team"
    shared.mkdir()
    (shared / "ledger.json.lock").write_text("")
    for path, mode in ((shared, 0o2770), (shared / "ledger.json.lock", 0o660)):
        os.chown(path, other_user.uid, other_user.gid)
        os.chmod(path, mode)
    check = ("import os, sys; from netra_rm.fsutil import ensure_private_dir, open_private; "
             "ensure_private_dir(sys.argv[1], group_shared=True); "
             "os.close(open_private(sys.argv[1] + '/ledger.json.lock', os.O_RDWR | os.O_CREAT, group_shared=True))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    member = subprocess.run([sys.executable, "-c", check, str(shared)], extra_groups=[other_user.gid],
                            capture_output=True, text=True, env=env)
    assert member.returncode == 0, member.stderr
    outsider = subprocess.run([sys.executable, "-c", check, str(shared)], extra_groups=[],
                              capture_output=True, text=True, env=env)
    assert outsider.returncode != 0 and "UnsafePathError" in outsider.stderr
