"""The pytest plugin as another project sees it: a pytest run of its own, in a
directory outside this repository, with the plugin loaded by its entry point."""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from unioncard.terminal.pcscd import missing_requirements

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

    def test_served(virtual_reader):
        assert virtual_reader.name == "Virtual PCD 00 00"
        assert virtual_reader.atr == Card.atr
        assert virtual_reader.transport.transmit(bytes.fromhex("8001000003010203")) == (
            bytes.fromhex("0302019000"))

    def test_psam_fixture_default(virtual_psam):
        assert virtual_psam is None

    @pytest.mark.hardware
    def test_needs_a_reader():
        raise AssertionError("must not run without a physical reader")
    '''
)


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PCSCLITE_")) and k != "COV_CORE_SOURCE"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.pcsc
@pytest.mark.skipif(bool(missing_requirements()), reason="pcscd or vpcd not installed")
def test_plugin_from_another_project(tmp_path):
    (tmp_path / "test_card.py").write_text(TESTS)
    before = set(Path(tempfile.gettempdir()).glob("unioncard-pcscd-main-*"))
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 1 skipped" in result.stdout
    assert "no physical PC/SC reader attached" in result.stdout or (
        "talks to a private pcscd" in result.stdout
    )

    deselected = run_pytest(tmp_path, "-m", "not pcsc")
    assert deselected.returncode == 0, deselected.stdout
    assert "1 passed, 1 skipped, 1 deselected" in deselected.stdout
    assert set(Path(tempfile.gettempdir()).glob("unioncard-pcscd-main-*")) <= before  # removed


def test_virtual_card_must_be_named(tmp_path):
    (tmp_path / "test_unnamed.py").write_text("def test_x(virtual_reader):\n    pass\n")
    result = run_pytest(tmp_path)
    assert result.returncode != 0
    assert "define `virtual_card` in your conftest.py" in result.stdout


def test_bad_mode_is_a_usage_error(tmp_path):
    (tmp_path / "test_nothing.py").write_text("def test_x():\n    pass\n")
    result = run_pytest(tmp_path, "-o", "unioncard_pcscd=shared")
    assert result.returncode == 4
    assert "unioncard_pcscd must be private or system" in result.stderr
