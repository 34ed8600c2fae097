"""`unioncard sim serve`: what it refuses before serving (locks, the trace file).

The serves here reach no pcscd (they wait for one, retrying): the refusals come first.
tests/pcsc/test_sim_serve.py serves through a real pcscd.
"""

import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from unioncard.cli import root
from unioncard.file_lock import lock_path

CLI = ("import ctypes, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
       "from unioncard.cli import main; sys.argv[0] = 'unioncard'; main()")


def run(*args: str):
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def images(tmp_path, sim_card, sim_psam):
    sim_card.save(tmp_path / "card.json")
    sim_psam.save(tmp_path / "psam.json")
    return tmp_path / "card.json", tmp_path / "psam.json"


def serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLI, "sim", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def serving(images):
    """A `sim serve` of the images (waiting for a pcscd that never comes), once it holds
    their locks."""
    card, psam = images
    process = serve(str(card), "--psam", str(psam), "--port", str(free_port()))
    deadline = time.monotonic() + 60
    while not all(lock_path(p).exists() and lock_path(p).read_text().startswith(
            f"{process.pid} ") for p in images):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "sim serve never locked its images"
        time.sleep(0.05)
    yield process
    process.kill()
    process.communicate(timeout=10)


def test_a_second_serve_of_a_served_image_is_refused(images, serving, sim_psam, tmp_path):
    # Reliability item 3: two serves of one image each spent the same balance.
    card, _ = images
    other_psam = tmp_path / "psam2.json"
    sim_psam.save(other_psam)
    second = serve(str(card), "--psam", str(other_psam), "--port", str(free_port()))
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert err.strip() == (
        f"unioncard: error: {card}: in use by unioncard sim serve (pid {serving.pid}), and "
        f"used by one command at a time: stop that one first (lock file {lock_path(card)})")
    assert lock_path(other_psam).exists() is False  # the second let go of what it took


def test_a_terminal_command_on_a_served_image_is_refused(images, serving):
    card, psam = images
    before = card.read_bytes()
    result = run("tap", "--mode", "bus", "--card", str(card), "--psam", str(psam), "--amount", "10",
                 "--journal", str(card.parent / "journal.sqlite"), "--json")
    assert result.exit_code == 2
    assert f"in use by unioncard sim serve (pid {serving.pid})" in result.stdout
    assert card.read_bytes() == before


def test_one_image_as_card_and_psam_is_refused(images):
    card, _ = images
    result = run("sim", "serve", str(card), "--psam", str(card))
    assert result.exit_code == 2 and "the PSAM is the card image" in result.output
    assert not lock_path(card).exists()


def test_the_trace_is_a_new_file_unless_forced_and_never_a_card_image(images, tmp_path,
                                                                      sim_card):
    # Reliability item 2: --trace truncated any file, the served image included.
    card, psam = images
    before = card.read_bytes()
    served = run("sim", "serve", str(card), "--psam", str(psam), "--trace", str(card),
                 "--force")
    assert served.exit_code == 2 and "is a card image being served" in served.output
    other = tmp_path / "other-member.json"
    sim_card.save(other)
    other_before = other.read_bytes()
    forced = run("sim", "serve", str(card), "--trace", str(other), "--force")
    assert forced.exit_code == 2
    assert "is a card image, not a trace; --force never replaces" in forced.output
    plain = tmp_path / "old.txt"
    plain.write_text("an older trace\n")
    unforced = run("sim", "serve", str(card), "--trace", str(plain))
    assert unforced.exit_code == 2 and "the file exists; use --force" in unforced.output
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "victim.txt")
    linked = run("sim", "serve", str(card), "--trace", str(link), "--force")
    assert linked.exit_code == 2 and "symbolic link" in linked.output
    assert card.read_bytes() == before and other.read_bytes() == other_before
    assert plain.read_text() == "an older trace\n" and not (tmp_path / "victim.txt").exists()
    assert not lock_path(card).exists() and not lock_path(psam).exists()


def test_a_forced_trace_replaces_an_old_trace(images, tmp_path):
    card, _ = images
    trace = tmp_path / "old.uct"
    trace.write_text("an older trace\n")
    process = serve(str(card), "--trace", str(trace), "--force", "--port", str(free_port()))
    deadline = time.monotonic() + 60
    while trace.read_bytes() != b"UCT1":
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the trace was never started"
        time.sleep(0.05)
    process.kill()
    process.communicate(timeout=10)
