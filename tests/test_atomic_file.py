"""`unioncard.atomic_file`: whole files or nothing, never through a planted link."""

import os

import pytest

from unioncard.atomic_file import open_atomically, write_atomically


def test_a_planted_link_is_refused_not_followed_nor_replaced(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    for name in ("card.json", "dangling.json"):
        link = tmp_path / name
        link.symlink_to(victim if name == "card.json" else tmp_path / "nowhere")
        with pytest.raises(OSError, match="symbolic link"):
            write_atomically(link, b"new")
        assert link.is_symlink()
    assert victim.read_text() == "keep" and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "dangling.json",
                                                          "victim"]


def test_only_regular_files_are_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        write_atomically(fifo, b"x")


def test_an_interrupted_stream_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.uct"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), open_atomically(target) as file:
        file.write(b"half")
        raise RuntimeError("the input was damaged")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.uct"]


def test_a_stream_without_replace_refuses_an_existing_file(tmp_path):
    target = tmp_path / "out.uct"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError), open_atomically(target, replace=False) as file:
        file.write(b"new")
    assert target.read_bytes() == b"old"
    fresh = tmp_path / "new.uct"
    with open_atomically(fresh, replace=False, new_file_mode=0o600) as file:
        file.write(b"new")
    assert fresh.read_bytes() == b"new" and fresh.stat().st_mode & 0o777 == 0o600


def test_writing_the_same_bytes_again_without_replace_is_harmless(tmp_path):
    target = tmp_path / "batch.ucb"
    write_atomically(target, b"abc", replace=False)
    write_atomically(target, b"abc", replace=False)
    with pytest.raises(FileExistsError):
        write_atomically(target, b"abd", replace=False)
    assert target.read_bytes() == b"abc"
