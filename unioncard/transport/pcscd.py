"""A private pcscd with the vpcd virtual reader, for tests and parallel runs.

pcsc-lite 1.9.9 hard-codes its IPC paths: the daemon ignores
``PCSCLITE_CSOCK_NAME`` and always creates ``/run/pcscd/pcscd.comm`` (only the
client library honours the variable), and a second daemon refuses to start
while that socket exists and the pid in ``/run/pcscd/pcscd.pid`` is alive.  A
private daemon therefore gets its socket the way systemd gives one: this
module binds a Unix socket in a private directory and hands it over as fd 3
with ``LISTEN_FDS=1`` / ``LISTEN_PID`` (socket activation).  Such a daemon
neither creates nor checks the system socket, so a system pcscd keeps running
untouched, and any number of private daemons run side by side, each with its
own reader.conf directory (``-c DIR``) declaring vpcd on its own TCP ports.

Clients reach a private daemon by setting ``PCSCLITE_CSOCK_NAME`` to its
socket.  libpcsclite reads the variable once per process, at its first call:
set it (`PcscdDaemon.activate`) before the process touches PC/SC.

pcscd still writes and, on exit, removes ``/run/pcscd/pcscd.pid`` (the path is
compiled in); when a system pcscd runs, this module writes that daemon's pid
back.  The private daemon ignores USB readers (``PCSCLITE_FILTER_IGNORE_READER_NAMES``
with every name the installed USB drivers declare), so it never takes a
physical reader away from the system pcscd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import plistlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from unioncard.errors import TransportError

__all__ = [
    "DEFAULT_VPCD_PORT",
    "SOCKET_ENV",
    "VPCD_DRIVER",
    "PcscdDaemon",
    "free_port_pair",
    "missing_requirements",
    "system_vpcd_port",
    "vpcd_reader_name",
]

log = logging.getLogger(__name__)

SOCKET_ENV = "PCSCLITE_CSOCK_NAME"
DEFAULT_VPCD_PORT = 35963
"""vpcd's default port (0x8C7B): slot 0; slot 1 listens on the next port."""
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
VPCD_FRIENDLY_NAME = "Virtual PCD"
VPCD_SLOTS = 2
SYSTEM_CONFIG_DIR = Path("/etc/reader.conf.d")
USB_DRIVER_DIR = Path("/usr/lib/pcsc/drivers")
RUN_DIR = Path("/run/pcscd")
PID_FILE = RUN_DIR / "pcscd.pid"
MARKER_ENV = "UNIONCARD_PRIVATE_PCSCD"
"""Set in the environment of every daemon this module starts, to tell them from a system one."""
READY_LINE = "daemon ready"

# Runs between fork and pcscd: fd 3 becomes the listening socket, LISTEN_PID
# this very pid (exec keeps it), and the daemon dies with the process that
# started it, so a killed test run leaves no pcscd behind.
_LAUNCHER = """\
import ctypes, os, signal, sys
fd, parent = int(sys.argv[1]), int(sys.argv[2])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(1)
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execvp(sys.argv[3], sys.argv[3:])
"""


def vpcd_reader_name(slot: int) -> str:
    """The PC/SC name of vpcd slot ``slot`` (``Virtual PCD 00 00`` for slot 0)."""
    if not 0 <= slot < VPCD_SLOTS:
        raise ValueError(f"vpcd has slots 0 and 1, not {slot}")
    return f"{VPCD_FRIENDLY_NAME} 00 {slot:02X}"


def _find_pcscd(pcscd: str) -> str | None:
    """pcscd on the PATH, or in /usr/sbin (not on a normal user's PATH)."""
    return shutil.which(pcscd) or shutil.which(pcscd, path="/usr/sbin:/sbin")


def missing_requirements(pcscd: str = "pcscd", driver: Path = VPCD_DRIVER) -> list[str]:
    """What is missing to run pcscd with vpcd here (empty when all is installed)."""
    missing = []
    if _find_pcscd(pcscd) is None:
        missing.append(f"{pcscd} (Debian package pcscd)")
    if not driver.exists():
        missing.append(f"{driver} (Debian package vsmartcard-vpcd)")
    return missing


def system_vpcd_port(config_dir: Path = SYSTEM_CONFIG_DIR) -> int:
    """The vpcd port the system pcscd's reader.conf declares (CHANNELID), or the default."""
    pattern = re.compile(r"^\s*CHANNELID\s+(0[xX][0-9a-fA-F]+|\d+)", re.MULTILINE)
    with contextlib.suppress(OSError):
        for path in sorted(config_dir.iterdir()):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                text = path.read_text()
                if "libifdvpcd" in text and (match := pattern.search(text)):
                    return int(match.group(1), 0)
    return DEFAULT_VPCD_PORT


def free_port_pair(host: str = "0.0.0.0") -> int:
    """A port p such that p and p+1 are both free now (vpcd listens on both)."""
    for _ in range(64):
        with socket.socket() as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if port >= 0xFFFF:
                continue
            with socket.socket() as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
                return int(port)
    raise TransportError("found no two consecutive free TCP ports for vpcd")


def _usb_reader_names(driver_dir: Path = USB_DRIVER_DIR) -> list[str]:
    """Every reader name the installed USB drivers declare (Info.plist ifdFriendlyName)."""
    names: set[str] = set()
    for plist in driver_dir.glob("*.bundle/Contents/Info.plist"):
        with contextlib.suppress(OSError, plistlib.InvalidFileException, ValueError):
            value = plistlib.loads(plist.read_bytes()).get("ifdFriendlyName", [])
            names.update([value] if isinstance(value, str) else value)
    # A name inside "Virtual PCD" would hide the virtual reader too.
    return sorted(n for n in names if n and ":" not in n and n not in VPCD_FRIENDLY_NAME)


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` (Linux /proc), empty if unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str] | None:
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return None
    return {link[8:-1] for link in links if link.startswith("socket:[")}


def _system_pcscd_pids() -> Iterator[int]:
    """pcscd processes not started by this module (a system daemon)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if Path(entry.path, "comm").read_text().strip() != "pcscd":
                    continue
                environ = Path(entry.path, "environ").read_bytes()
            except PermissionError:
                yield int(entry.name)  # another user's daemon: not ours
                continue
            except OSError:
                continue
            if f"{MARKER_ENV}=1".encode() not in environ.split(b"\0"):
                yield int(entry.name)


def _restore_system_pid_file() -> None:
    """Point /run/pcscd/pcscd.pid back at the system pcscd, if one runs."""
    pids = sorted(_system_pcscd_pids())
    if pids:
        with contextlib.suppress(OSError):
            PID_FILE.write_text(f"{pids[0]}\n")


class PcscdDaemon:
    """A pcscd of our own, in the foreground, serving vpcd on ``vpcd_port`` and the next port.

    ``directory`` holds the reader.conf directory, the client socket and the
    daemon's log; a temporary one is made (and removed) when not given.
    ``vpcd_port`` None picks two free consecutive ports.  Use as a context
    manager, or call `start` and `stop`.
    """

    def __init__(
        self,
        vpcd_port: int | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        pcscd: str = "pcscd",
        driver: Path = VPCD_DRIVER,
        startup_timeout: float = 10.0,
        ignore_usb_readers: bool = True,
        debug: bool = False,
    ) -> None:
        self._fixed_port = vpcd_port
        self.vpcd_port = vpcd_port or 0
        self._owns_directory = directory is None
        self.directory = Path(directory) if directory is not None else None
        self.pcscd = pcscd
        self.driver = Path(driver)
        self.startup_timeout = startup_timeout
        self.ignore_usb_readers = ignore_usb_readers
        self.debug = debug
        self._listener: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # -- paths --------------------------------------------------------------

    def _dir(self) -> Path:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="unioncard-pcscd-"))
        return self.directory

    @property
    def socket_path(self) -> Path:
        """The client socket: give it to PC/SC programs as PCSCLITE_CSOCK_NAME."""
        return self._dir() / "pcscd.comm"

    @property
    def config_dir(self) -> Path:
        return self._dir() / "reader.conf.d"

    @property
    def log_path(self) -> Path:
        return self._dir() / "pcscd.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def reader_name(self, slot: int) -> str:
        return vpcd_reader_name(slot)

    def client_env(self) -> dict[str, str]:
        """Environment entries that point a PC/SC program at this daemon."""
        return {SOCKET_ENV: str(self.socket_path)}

    def activate(self) -> None:
        """Point this process (and the processes it starts) at this daemon.

        libpcsclite reads the socket name once per process, so this must come
        before the first PC/SC call of the process.
        """
        os.environ[SOCKET_ENV] = str(self.socket_path)

    # -- start / stop -------------------------------------------------------

    def start(self) -> PcscdDaemon:
        """Start the daemon and wait until its vpcd ports listen."""
        if self.running:
            return self
        missing = missing_requirements(self.pcscd, self.driver)
        if missing:
            raise TransportError("cannot start pcscd, missing: " + ", ".join(missing))
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            if not self._fixed_port:
                self.vpcd_port = free_port_pair()
            try:
                self._spawn()
                break
            except TransportError:
                self._kill()
                self._close_listener()  # the log stays in the directory, for inspection
                raise
            except _PortTaken:
                self._kill()
                if attempt == attempts:
                    raise TransportError(
                        f"vpcd could not listen on ports {self.vpcd_port} and "
                        f"{self.vpcd_port + 1} (in use?)\n{self.log_tail()}"
                    ) from None
        return self

    def _listen(self) -> socket.socket:
        if self._listener is None:
            path = self.socket_path
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            listener.listen(128)
            self._listener = listener
        return self._listener

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for old in self.config_dir.iterdir():
            old.unlink()
        (self.config_dir / "vpcd").write_text(
            f'FRIENDLYNAME "{VPCD_FRIENDLY_NAME}"\n'
            f"DEVICENAME   /dev/null:0x{self.vpcd_port:04X}\n"
            f"LIBPATH      {self.driver}\n"
            f"CHANNELID    0x{self.vpcd_port:04X}\n"
        )

    def _spawn(self) -> None:
        self._write_config()
        listener = self._listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env[MARKER_ENV] = "1"
        if self.ignore_usb_readers and (names := _usb_reader_names()):
            env["PCSCLITE_FILTER_IGNORE_READER_NAMES"] = ":".join(names)
        level = "--debug" if self.debug else "--info"
        argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(listener.fileno()),
                str(os.getpid()), _find_pcscd(self.pcscd) or self.pcscd, "--foreground",
                level, "--config", str(self.config_dir)]
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as logfile:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),), env=env, start_new_session=True,
            )
        self._process = process
        self._wait_ready(process)
        _restore_system_pid_file()
        log.info("pcscd %d ready: socket %s, vpcd ports %d-%d", process.pid,
                 self.socket_path, self.vpcd_port, self.vpcd_port + VPCD_SLOTS - 1)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            text = self._log_since_start()
            if READY_LINE in text:
                break
            if process.poll() is not None:
                raise TransportError(
                    self._failure(f"pcscd exited with status {process.returncode}")
                )
            if time.monotonic() > deadline:
                self._kill()
                raise TransportError(
                    self._failure(f"pcscd was not ready after {self.startup_timeout:g} s")
                )
            time.sleep(0.005)
        if "Could not initialize connection to virtual ICC" in text:
            raise _PortTaken
        mine = _socket_inodes(process.pid)
        if mine is not None:
            for port in range(self.vpcd_port, self.vpcd_port + VPCD_SLOTS):
                if not _listening_inodes(port) & mine:
                    raise _PortTaken

    def _log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _failure(self, what: str) -> str:
        hint = ""
        if "cannot create /run/pcscd" in self._log_since_start():
            hint = ("\npcscd needs the directory /run/pcscd; create it once with "
                    "`sudo install -d -m 755 /run/pcscd` (the pcscd package's socket "
                    "unit also creates it)")
        return f"{what}; log {self.log_path}:\n{self.log_tail()}{hint}"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the daemon's log (for error messages)."""
        text = self._log_since_start()
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after ``timeout``) and clean up."""
        self._kill(timeout)
        self._close_listener()
        if self._owns_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    def restart(self) -> None:
        """Stop and start again on the same socket and ports (clients must reconnect)."""
        self._kill()
        self._spawn()

    def _kill(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("pcscd %d ignored SIGTERM for %g s: killing it", process.pid, timeout)
                process.kill()
                process.wait()
        _restore_system_pid_file()

    def __enter__(self) -> PcscdDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"PcscdDaemon(vpcd_port={self.vpcd_port}, {state}, socket={self.directory})"


class _PortTaken(Exception):
    """vpcd could not listen on its ports: try others."""
