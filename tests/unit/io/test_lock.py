"""The output folder's run lock never writes through a link (issue 25, item 2)."""

from __future__ import annotations

import os

import pytest

from simo_merge.io.lock import LOCK_NAME, OutputLockedError, output_lock


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path, link):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    out = tmp_path / "run"
    out.mkdir()
    (os.symlink if link == "symlink" else os.link)(outside, out / LOCK_NAME)
    with pytest.raises(OutputLockedError, match=rf"run/{LOCK_NAME}: the run lock is"):
        with output_lock(out):
            pass
    assert outside.read_text() == "keep me\n"


def test_the_lock_holds_the_pid_and_is_never_truncated(tmp_path):
    with output_lock(tmp_path) as path:
        assert path.read_text().strip() == str(os.getpid())
        size = path.stat().st_size
    assert path.stat().st_size == size and path.read_text().strip() == str(os.getpid())
    with output_lock(tmp_path):  # taken again after release
        assert path.read_text().strip() == str(os.getpid())
