"""Private pcscd instances: socket activation, side-by-side daemons, the client
socket variable, port conflicts, failures with the log, and no orphans."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unioncard.errors import TransportError
from unioncard.transport import pcscd as pcscd_module
from unioncard.transport.pcsc import list_readers
from unioncard.transport.pcscd import (
    DEFAULT_VPCD_PORT,
    SOCKET_ENV,
    PcscdDaemon,
    free_port_pair,
    missing_requirements,
    system_vpcd_port,
    vpcd_reader_name,
)

needs_pcscd = pytest.mark.skipif(
    bool(missing_requirements()), reason="pcscd or the vpcd driver is not installed"
)

LIST_READERS = (
    "import json\n"
    "from unioncard.transport.pcsc import list_readers\n"
    "print(json.dumps(list_readers()))\n"
)


def readers_seen_by_a_new_process(daemon: PcscdDaemon) -> list[str]:
    env = dict(os.environ, **daemon.client_env())
    out = subprocess.run([sys.executable, "-c", LIST_READERS], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return list(json.loads(out))


# -- without pcscd ----------------------------------------------------------------


def test_reader_names():
    assert vpcd_reader_name(0) == "Virtual PCD 00 00"
    assert vpcd_reader_name(1) == "Virtual PCD 00 01"
    with pytest.raises(ValueError):
        vpcd_reader_name(2)


def test_system_vpcd_port_comes_from_reader_conf(tmp_path):
    assert system_vpcd_port(tmp_path) == DEFAULT_VPCD_PORT
    assert system_vpcd_port(tmp_path / "absent") == DEFAULT_VPCD_PORT
    (tmp_path / "other").write_text('FRIENDLYNAME "x"\nLIBPATH /usr/lib/libother.so\n'
                                    "CHANNELID 0x1000\n")
    (tmp_path / "vpcd").write_text('FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x9C40\n'
                                   "LIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\n"
                                   "CHANNELID    0x9C40\n")
    assert system_vpcd_port(tmp_path) == 0x9C40


def test_free_port_pair_is_two_free_ports():
    port = free_port_pair()
    for p in (port, port + 1):
        with socket.socket() as s:
            s.bind(("0.0.0.0", p))


def test_missing_requirements_name_the_debian_packages(tmp_path):
    missing = missing_requirements("no-such-pcscd", tmp_path / "libifdvpcd.so")
    assert missing == [
        "no-such-pcscd (Debian package pcscd)",
        f"{tmp_path / 'libifdvpcd.so'} (Debian package vsmartcard-vpcd)",
    ]
    with pytest.raises(TransportError, match="missing: no-such-pcscd"):
        PcscdDaemon(pcscd="no-such-pcscd").start()


def test_usb_reader_names_never_hide_the_virtual_reader(tmp_path):
    bundle = tmp_path / "ifd-test.bundle" / "Contents"
    bundle.mkdir(parents=True)
    (bundle / "Info.plist").write_bytes(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
        b"<key>ifdFriendlyName</key><array><string>ACME Reader</string>"
        b"<string>PCD</string><string>a:b</string><string>ACME Reader</string></array>"
        b"</dict></plist>"
    )
    assert pcscd_module._usb_reader_names(tmp_path) == ["ACME Reader"]


# -- with pcscd ----------------------------------------------------------------------


def test_the_test_process_talks_to_its_private_daemon(pcscd_daemon):
    if not isinstance(pcscd_daemon, PcscdDaemon):
        pytest.skip("private pcscd mode only")
    assert os.environ[SOCKET_ENV] == str(pcscd_daemon.socket_path)
    assert pcscd_daemon.socket_path.is_socket()
    log = pcscd_daemon.log_path.read_text()
    assert "Started by systemd" in log  # socket activation: it did not make its own socket
    assert list_readers() == [vpcd_reader_name(0), vpcd_reader_name(1)]


@needs_pcscd
def test_daemons_side_by_side_leave_the_system_socket_alone():
    system_socket = Path("/run/pcscd/pcscd.comm")
    existed = system_socket.exists()
    with PcscdDaemon() as first, PcscdDaemon() as second:
        assert first.vpcd_port != second.vpcd_port
        assert first.socket_path != second.socket_path
        assert system_socket.exists() == existed
        for daemon in (first, second):
            assert readers_seen_by_a_new_process(daemon) == [vpcd_reader_name(0),
                                                             vpcd_reader_name(1)]
        directory = first.directory
    assert directory is not None and not directory.exists()
    assert not first.running and not second.running


@needs_pcscd
def test_ports_in_use_are_reported():
    port = free_port_pair()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))
        taken.listen(1)
        daemon = PcscdDaemon(port)
        with pytest.raises(TransportError, match=f"vpcd could not listen on ports {port} and"):
            daemon.start()
        daemon.stop()


@needs_pcscd
def test_a_daemon_that_exits_is_reported_with_its_log(tmp_path):
    fake = tmp_path / "pcscd"
    fake.write_text("#!/bin/sh\necho 'cannot create /run/pcscd: Permission denied'\nexit 3\n")
    fake.chmod(0o755)
    daemon = PcscdDaemon(pcscd=str(fake), directory=tmp_path / "d")
    with pytest.raises(TransportError) as info:
        daemon.start()
    message = str(info.value)
    assert "pcscd exited with status 3" in message
    assert "cannot create /run/pcscd: Permission denied" in message
    assert "sudo install -d -m 755 /run/pcscd" in message
    daemon.stop()


@needs_pcscd
def test_a_daemon_that_never_gets_ready_is_killed(tmp_path):
    fake = tmp_path / "pcscd"
    fake.write_text("#!/bin/sh\necho starting\nexec sleep 60\n")
    fake.chmod(0o755)
    daemon = PcscdDaemon(pcscd=str(fake), directory=tmp_path / "d", startup_timeout=0.3)
    with pytest.raises(TransportError, match=r"not ready after 0.3 s(.|\n)*starting"):
        daemon.start()
    assert not daemon.running


@needs_pcscd
def test_restart_keeps_socket_and_ports():
    with PcscdDaemon() as daemon:
        pid, port = daemon.pid, daemon.vpcd_port
        daemon.restart()
        assert daemon.running and daemon.pid != pid and daemon.vpcd_port == port
        assert readers_seen_by_a_new_process(daemon) == [vpcd_reader_name(0),
                                                         vpcd_reader_name(1)]


@needs_pcscd
def test_the_daemon_dies_with_the_process_that_started_it():
    script = (
        "import sys, time\n"
        "from unioncard.transport.pcscd import PcscdDaemon\n"
        "d = PcscdDaemon().start()\n"
        "print(d.pid, d.directory, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid_text, directory = parent.stdout.readline().split()
        pid = int(pid_text)
        os.kill(pid, 0)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ")[1].startswith("Z"):
                    break  # dead, waiting to be reaped by init
            time.sleep(0.02)
        else:
            assert not Path(f"/proc/{pid}").exists()
    finally:
        parent.kill()
        parent.wait()
    shutil.rmtree(directory)  # what its parent would have removed at a clean stop


@needs_pcscd
@pytest.mark.skipif(not os.access("/run", os.W_OK) and not os.access("/run/pcscd", os.W_OK),
                    reason="cannot write /run/pcscd here")
def test_the_system_pcscd_keeps_its_pid_file(tmp_path):
    """A private pcscd overwrites /run/pcscd/pcscd.pid and removes it on exit; the
    system daemon's pid is written back.  A process named pcscd stands in for it."""
    stand_in = tmp_path / "pcscd"
    shutil.copy("/bin/sleep", stand_in)
    system = subprocess.Popen([str(stand_in), "60"])
    pid_file = pcscd_module.PID_FILE
    existed = pid_file.exists()

    def names_the_system_pcscd() -> bool:
        # Other test processes' private daemons may rewrite the file for a moment too.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, IndexError):
                if pid_file.read_text().split()[0] == str(system.pid):
                    return True
            time.sleep(0.01)
        return False

    try:
        with PcscdDaemon() as private:
            assert private.pid != system.pid
            assert names_the_system_pcscd()
        assert names_the_system_pcscd()
    finally:
        system.kill()
        system.wait()
        if not existed:
            pid_file.unlink(missing_ok=True)
