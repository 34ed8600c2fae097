"""`unioncard.file_lock`: one user of a card image at a time, across processes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from unioncard.file_lock import (
    FileInUseError,
    FileLock,
    FileLockError,
    is_card_image,
    lock_path,
)

HOLD = ("import sys, time; from unioncard.file_lock import FileLock; "
        "lock = FileLock(sys.argv[1], 'unioncard sim serve').acquire(); "
        "print('locked', flush=True); time.sleep(60)")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``card.json``."""
    image = tmp_path / "card.json"
    image.write_text("{}")
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(image)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "locked\n"
    yield image, process
    process.kill()
    process.wait(10)


def test_a_second_process_is_refused_with_the_holder_named(holder):
    image, process = holder
    with pytest.raises(FileInUseError) as refused:
        FileLock(image, "unioncard tap").acquire()
    message = str(refused.value)
    assert message.startswith(f"{image}: in use by unioncard sim serve (pid {process.pid})")
    assert "\n" not in message


def test_a_killed_holder_leaves_the_lock_free(holder):
    image, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert lock_path(image).exists()  # left behind, but nobody holds it
    with FileLock(image, "unioncard tap") as lock:
        assert lock.locked
        assert lock_path(image).read_text() == f"{os.getpid()} unioncard tap\n"
    assert not lock_path(image).exists()


def test_one_process_is_refused_the_same_image_twice_even_through_a_link(tmp_path):
    image = tmp_path / "card.json"
    link = tmp_path / "psam.json"
    link.symlink_to(image)
    with FileLock(image, "unioncard sim serve"), \
            pytest.raises(FileInUseError, match="the same file is given twice"):
        FileLock(link, "unioncard sim serve").acquire()
    with FileLock(link, "x"):  # released: free again
        pass


def test_the_lock_file_is_beside_the_image_and_never_a_planted_link(tmp_path):
    image = tmp_path / "card.json"
    assert lock_path(image) == tmp_path.resolve() / ".card.json.lock"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    lock_path(image).symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        FileLock(image, "x").acquire()
    assert victim.read_text() == "keep"


def test_release_lets_a_waiting_process_in(tmp_path):
    image = tmp_path / "card.json"
    lock = FileLock(image, "first").acquire()
    script = ("import sys, time; from unioncard.file_lock import FileLock, FileInUseError\n"
              "for _ in range(200):\n"
              "    try:\n"
              "        FileLock(sys.argv[1], 'second').acquire(); print('got it'); break\n"
              "    except FileInUseError:\n"
              "        time.sleep(0.01)\n")
    process = subprocess.Popen([sys.executable, "-c", script, str(image)],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    lock.release()
    out, _ = process.communicate(timeout=30)
    assert out == "got it\n"


def test_is_card_image(tmp_path, sim_card):
    image = tmp_path / "card.json"
    sim_card.save(image)
    other = tmp_path / "trace.txt"
    other.write_text("> 00A4040000\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert is_card_image(image)
    assert not is_card_image(other) and not is_card_image(fifo)
    assert not is_card_image(tmp_path / "missing")


@pytest.mark.parametrize("content", [b'{"keep": true}\n', b"1234 unioncard tap\nmore\n",
                                     b"\xff\xfe", b"9" * 5000])
def test_a_file_at_the_lock_path_that_is_not_a_lock_note_is_left_alone(tmp_path, content):
    image = tmp_path / "card.json"
    image.write_text("{}")
    lock_path(image).write_bytes(content)
    with pytest.raises(FileLockError, match="holds something other than a lock note") as refused:
        FileLock(image, "unioncard tap").acquire()
    assert "\n" not in str(refused.value) and "Errno" not in str(refused.value)
    assert lock_path(image).read_bytes() == content  # neither truncated nor removed


def test_a_hard_link_at_the_lock_path_is_neither_truncated_nor_removed(tmp_path):
    image = tmp_path / "card.json"
    image.write_text("{}")
    keep = tmp_path / "keep.json"
    keep.write_text("1 looks like a note\n")  # even a note: a file with two names is not ours
    os.link(keep, lock_path(image))
    with pytest.raises(FileLockError, match="has 2 names"):
        FileLock(image, "unioncard tap").acquire()
    assert keep.read_text() == "1 looks like a note\n" and lock_path(image).exists()


def test_a_lock_note_left_by_a_killed_holder_is_taken_over(tmp_path):
    image = tmp_path / "card.json"
    lock_path(image).write_text("999999 unioncard sim serve\n")
    with FileLock(image, "unioncard tap"):
        assert lock_path(image).read_text() == f"{os.getpid()} unioncard tap\n"
    assert not lock_path(image).exists()


def test_an_image_with_two_names_is_refused(tmp_path):
    image = tmp_path / "card.json"
    image.write_text("{}")
    os.link(image, tmp_path / "alias.json")
    for name in (image, tmp_path / "alias.json"):
        with pytest.raises(FileLockError, match="has 2 names") as refused:
            FileLock(name, "unioncard tap").acquire()
        assert not isinstance(refused.value, FileInUseError) and "\n" not in str(refused.value)
    assert not lock_path(image).exists() and not lock_path(tmp_path / "alias.json").exists()


def test_two_processes_never_hold_one_image_through_a_hard_link(tmp_path):
    """Locks are per name: a second name of the image must not give a second lock."""
    image = tmp_path / "card.json"
    image.write_text("{}")
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(image)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        os.link(image, tmp_path / "alias.json")  # made while the image is held
        with pytest.raises(FileLockError, match="has 2 names"):
            FileLock(tmp_path / "alias.json", "unioncard tap").acquire()
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_lock_path_that_is_not_a_file_is_refused_in_words(tmp_path, kind):
    image = tmp_path / "card.json"
    if kind == "fifo":
        os.mkfifo(lock_path(image))
    else:
        lock_path(image).mkdir()
    with pytest.raises(FileLockError) as refused:
        FileLock(image, "unioncard tap").acquire()
    assert str(refused.value).startswith(str(lock_path(image)))
    assert "Errno" not in str(refused.value)
