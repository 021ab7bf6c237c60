import pytest

from rewardlab.utils import atomic_path


def test_atomic_path_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "w.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o644"


def test_checkpoint_is_flushed_before_the_rename(tmp_path, monkeypatch):
    import os

    from rewardlab import utils

    calls = []
    monkeypatch.setattr(utils.os, "fsync", lambda fd: calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    real_replace = os.replace
    monkeypatch.setattr(utils.os, "replace", lambda a, b: (calls.append(("replace", str(b))), real_replace(a, b)))
    utils.save_checkpoint(tmp_path / "checkpoint.pt", {"step": 1})
    kinds = [k for k, _ in calls]
    assert kinds == ["fsync", "replace", "fsync"]  # the file, the rename, the folder
    assert calls[0][1].endswith(".tmp") and calls[2][1] == str(tmp_path)


def test_orphaned_temporary_files_are_removed(tmp_path):
    from rewardlab.utils import remove_orphans

    orphan = tmp_path / ".checkpoint.pt.a1b2c3d4.tmp"
    orphan.write_text("half")
    keep = [tmp_path / ".hidden.tmp", tmp_path / "checkpoint.pt", tmp_path / "notes.a1b2c3d4.tmp"]
    for p in keep:
        p.write_text("x")
    assert remove_orphans(tmp_path) == [orphan]
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_atomic_path_honours_the_umask(tmp_path):
    import os

    old = os.umask(0o077)
    try:
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o600
