"""Black-box conformance: an operator's CLI run driving an independent PC/SC terminal.

The card and PSAM are issued with ``unioncard card issue`` and served with
``unioncard sim serve --private-pcscd``; ``blackbox_terminal.py`` (written from
docs/protocol.md only) runs the acceptance sequence against them in a process of its
own, and ``unioncard card show --json`` must then report the balances the
terminal computed.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.pcsc

UNIONCARD = Path(sys.executable).parent / "unioncard"
TERMINAL = Path(__file__).with_name("blackbox_terminal.py")
MEMBER_NO = "20260001"
ID_NUMBER = "11010519491231002X"  # GB 11643 check digit X
TERMINAL_ID = "A1B2C3D4E5F6"
TRANSIT_BALANCE = 5000
ETC_BALANCE = 2000
TRANSIT_LOAD, TRANSIT_PURCHASE = 1000, 250
ETC_LOAD, ETC_PURCHASE = 3000, 1550
CARD_READER, PSAM_READER = "Virtual PCD 00 00", "Virtual PCD 00 01"


def _clean_env() -> dict[str, str]:
    """The environment without any PC/SC socket or vpcd port inherited from the test run."""
    env = dict(os.environ)
    env.pop("PCSCLITE_CSOCK_NAME", None)
    env.pop("UNIONCARD_VPCD_PORT", None)
    return env


def _cli(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UNIONCARD), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=_clean_env(), check=False,
    )


def _read_socket_line(proc: subprocess.Popen[bytes], err_file: Path, timeout: float) -> str:
    """Read ``PCSCLITE_CSOCK_NAME=...`` from sim serve's stdout (docs/pcsc.md)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            for line in buffer.decode(errors="replace").splitlines(keepends=True):
                if line.startswith("PCSCLITE_CSOCK_NAME=") and line.endswith("\n"):
                    return line.strip().split("=", 1)[1]
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # sim serve closed stdout: it exited
                proc.wait(5)
                pytest.fail(
                    f"sim serve exited ({proc.returncode}) before printing PCSCLITE_CSOCK_NAME; "
                    f"stdout {buffer!r}; stderr:\n{err_file.read_text(errors='replace')}"
                )
            buffer += chunk
    pytest.fail(
        f"sim serve printed no PCSCLITE_CSOCK_NAME line in {timeout} s; stdout {buffer!r}; "
        f"stderr:\n{err_file.read_text(errors='replace')}"
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by the test; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _failed_steps(report: dict[str, Any]) -> str:
    lines = []
    for step in report["steps"]:
        if step["passed"]:
            continue
        lines.append(f"- {step['name']}: {step['reason']}")
        for ex in step["exchanges"]:
            answer = ex.get("response", ex.get("error", ""))
            lines.append(f"    {ex['reader']}: {ex['command']} -> {answer}")
    return "\n".join(lines)


@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_blackbox_terminal_over_pcsc(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], protocol: str
) -> None:
    sheet = tmp_path / "members.csv"
    sheet.write_text(
        "name,member_no,organization,category,id_number\n"
        f"张三,{MEMBER_NO},市总工会,model_worker,{ID_NUMBER}\n",
        encoding="utf-8",
    )
    out = tmp_path / "cards"
    issued = _cli(
        "card", "issue", "--members", sheet, "--out", out,
        "--transit-balance", str(TRANSIT_BALANCE), "--etc-balance", str(ETC_BALANCE),
        "--terminal-id", TERMINAL_ID, "--protocol", protocol,
    )
    assert issued.returncode == 0, f"card issue failed:\n{issued.stderr}"
    card = out / f"{MEMBER_NO}-card.json"
    psam = out / f"psam-{TERMINAL_ID}.json"
    assert card.is_file() and psam.is_file(), sorted(p.name for p in out.iterdir())

    serve_err = tmp_path / "serve.err"
    with serve_err.open("wb") as err:
        serve = subprocess.Popen(
            [str(UNIONCARD), "sim", "serve", str(card), "--psam", str(psam), "--private-pcscd"],
            stdout=subprocess.PIPE, stderr=err, env=_clean_env(),
        )
    processes.append(serve)
    socket_name = _read_socket_line(serve, serve_err, timeout=15)

    env = _clean_env()
    env["PCSCLITE_CSOCK_NAME"] = socket_name
    try:
        terminal = subprocess.run(
            [
                sys.executable, str(TERMINAL),
                "--card-reader", CARD_READER, "--psam-reader", PSAM_READER,
                "--member-no", MEMBER_NO, "--timeout", "10",
                "--transit-load", str(TRANSIT_LOAD), "--transit-purchase", str(TRANSIT_PURCHASE),
                "--etc-load", str(ETC_LOAD), "--etc-purchase", str(ETC_PURCHASE),
            ],
            capture_output=True, text=True, timeout=30, env=env, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the terminal did not finish in 30 s; stderr:\n{exc.stderr!r}")
    try:
        report = json.loads(terminal.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"the terminal printed no JSON report (exit {terminal.returncode}); "
            f"stdout:\n{terminal.stdout}\nstderr:\n{terminal.stderr}"
        )
    assert report["passed"] and terminal.returncode == 0, (
        f"{len(report['failed_steps'])} of {len(report['steps'])} steps failed "
        f"(exit {terminal.returncode}):\n{_failed_steps(report)}"
    )
    seen_sws = {sw for step in report["steps"] for sw in step["sws"]}
    assert {"9302", "6985", "9401"} <= seen_sws, sorted(seen_sws)
    assert report["terminal_id"] == TERMINAL_ID
    assert report["member_no"] == MEMBER_NO

    serve.send_signal(signal.SIGTERM)
    try:
        serve.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("sim serve did not stop within 10 s of SIGTERM")
    stderr = serve_err.read_text(errors="replace")
    assert serve.returncode == 0, f"sim serve exited {serve.returncode} on SIGTERM:\n{stderr}"
    assert "Traceback" not in stderr, stderr

    shown = _cli("card", "show", "--json", card)
    assert shown.returncode == 0, shown.stderr
    purses = {p["application"]: p for p in json.loads(shown.stdout)["purses"]}
    balances = report["balances"]
    for name, initial, load, purchase in (
        ("transit", TRANSIT_BALANCE, TRANSIT_LOAD, TRANSIT_PURCHASE),
        ("etc", ETC_BALANCE, ETC_LOAD, ETC_PURCHASE),
    ):
        book = balances[name]
        assert (book["initial"], book["loaded"], book["purchased"]) == (initial, load, purchase)
        assert book["expected_final"] == book["initial"] + book["loaded"] - book["purchased"]
        assert purses[name]["balance"] == book["expected_final"], (
            f"{name}: card show says {purses[name]['balance']}, "
            f"the terminal computed {book['expected_final']}"
        )
