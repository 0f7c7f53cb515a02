"""Atomic writes: all or nothing, and files readable like any other new file."""

import os
import stat

import pytest

from unsee.files import atomic_write, atomic_write_text


def test_atomic_write_gives_the_umask_mode_not_owner_only(tmp_path):
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def boom(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]
