"""The pytest plugin as another project sees it: a pytest run of its own, in a
directory outside this repository, with the plugin loaded by its entry point."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from unioncard.transport.pcscd import PcscdDaemon, missing_requirements

TESTS = textwrap.dedent(
    '''
    import pytest

    class Card:
        atr = bytes.fromhex("3B0455434152")

        def power_on(self):
            return self.atr

        def reset(self):
            return self.atr

        def power_off(self):
            pass

        def transmit(self, command):
            return bytes(reversed(command[5:])) + b"\\x90\\x00"

    @pytest.fixture
    def virtual_card():
        return Card()

    @pytest.fixture
    def virtual_psam():
        return None

    def test_served(virtual_reader):
        assert virtual_reader.name == "Virtual PCD 00 00"
        assert virtual_reader.atr == Card.atr
        assert virtual_reader.transport.transmit(bytes.fromhex("8001000003010203")) == (
            bytes.fromhex("0302019000"))

    def test_no_psam(virtual_reader):
        assert virtual_reader.psam_name is None and virtual_reader.psam_transport is None

    @pytest.mark.hardware
    def test_needs_a_reader():
        raise AssertionError("must not run without a physical reader")
    '''
)


@pytest.fixture
def run_tmp():
    """A temporary directory of the inner run's own (short: it holds a socket path)."""
    path = Path(tempfile.mkdtemp(prefix="uc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def private_dirs(tmp: Path) -> list[Path]:
    return list(tmp.glob("unioncard-pcscd-*"))


def run_pytest(directory: Path, *args: str, tmp: Path | None = None,
               env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PCSCLITE_")) and k != "COV_CORE_SOURCE"}
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.pcsc
@pytest.mark.skipif(bool(missing_requirements()), reason="pcscd or vpcd not installed")
def test_plugin_from_another_project(tmp_path, run_tmp):
    (tmp_path / "test_card.py").write_text(TESTS)
    result = run_pytest(tmp_path, tmp=run_tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 1 skipped" in result.stdout
    assert "no physical PC/SC reader attached" in result.stdout or (
        "talks to a private pcscd" in result.stdout
    )

    assert private_dirs(run_tmp) == []  # the private pcscd's directory is removed

    deselected = run_pytest(tmp_path, "-m", "not pcsc", tmp=run_tmp)
    assert deselected.returncode == 0, deselected.stdout
    assert "1 skipped, 2 deselected" in deselected.stdout


SIM_TESTS = textwrap.dedent(
    '''
    import pytest

    def test_default_cards(virtual_reader, sim_card, sim_psam):
        assert virtual_reader.card is sim_card and virtual_reader.psam is sim_psam
        card, psam = virtual_reader.transport, virtual_reader.psam_transport
        select = bytes.fromhex("00A4040008A000000632010105")
        assert card.transmit(select)[-2:] == b"\\x90\\x00"
        assert card.transmit(bytes.fromhex("805C000204")).hex() == "000027109000"
        assert psam.transmit(bytes.fromhex("00B0960006")).hex() == "0011223344559000"

    @pytest.mark.sim_card(transit_balance=1, protocol="T=0")
    @pytest.mark.sim_psam(terminal_id="AABBCCDDEEFF")
    def test_marker_options(sim_card, sim_psam, fault_injector):
        assert sim_card.protocol == "T=0" and sim_card.purse("transit").balance == 1
        assert sim_psam.psam() is not None
        assert fault_injector is sim_card.faults
    '''
)


@pytest.mark.pcsc
@pytest.mark.skipif(bool(missing_requirements()), reason="pcscd or vpcd not installed")
def test_simulated_cards_by_default(tmp_path):
    (tmp_path / "test_sim.py").write_text(SIM_TESTS)
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.pcsc
@pytest.mark.skipif(bool(missing_requirements()), reason="pcscd or vpcd not installed")
def test_system_mode_uses_the_pcscd_of_the_environment(tmp_path, run_tmp):
    """--unioncard-pcscd=system: no pcscd of its own; the one PCSCLITE_CSOCK_NAME names."""
    (tmp_path / "test_card.py").write_text(TESTS + textwrap.dedent(
        '''
        import os

        def test_external(pcscd_daemon):
            assert type(pcscd_daemon).__name__ == "ExternalPcscd"
            assert pcscd_daemon.vpcd_port == int(os.environ["PORT"])
            assert pcscd_daemon.socket_path == os.environ["PCSCLITE_CSOCK_NAME"]
        '''))
    with PcscdDaemon() as system:
        env = {**system.client_env(), "PORT": str(system.vpcd_port)}
        result = run_pytest(tmp_path, "--unioncard-pcscd=system",
                            f"--unioncard-vpcd-port={system.vpcd_port}", tmp=run_tmp,
                            env_extra=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "3 passed, 1 skipped" in result.stdout
        assert "attached, but this test process talks" not in result.stdout
        log = system.log_path.read_text()
    assert "Card ATR: 3B 04 55 43 41 52" in log  # the outside project's card, in this pcscd
    assert private_dirs(run_tmp) == []  # it started no pcscd of its own
    assert (run_tmp / f"unioncard-vpcd-{system.vpcd_port}.lock").exists()  # one test at a time


def test_bad_mode_is_a_usage_error(tmp_path):
    (tmp_path / "test_nothing.py").write_text("def test_x():\n    pass\n")
    result = run_pytest(tmp_path, "-o", "unioncard_pcscd=shared")
    assert result.returncode == 4
    assert "unioncard_pcscd must be private or system" in result.stderr
