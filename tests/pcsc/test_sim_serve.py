"""``unioncard sim serve`` as a separate process behind pcscd: purchases through
PC/SC, APDU traces, seeds, and SIGKILL during DEBIT leaving consistent images."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from unioncard.apdu import ResponseAPDU
from unioncard.apdu import purse as cmd
from unioncard.apdu.trace import Device, Direction, read_records
from unioncard.applet_sim import SimulatedCard
from unioncard.errors import CardError, TransportError
from unioncard.terminal import Decision
from unioncard.testing.purse_rig import PurseRig, expected_tac, prepare_debit
from unioncard.transport import Channel
from unioncard.transport.pcsc import PcscTransport
from unioncard.transport.pcscd import PcscdDaemon, vpcd_reader_name

AMOUNT = 1
START_BALANCE = 10_000
# The CLI, dying with the test process even when that is killed (PR_SET_PDEATHSIG).
CLI = ("import ctypes, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
       "from unioncard.cli import main; sys.argv[0] = 'unioncard'; main()")


@pytest.fixture
def images(tmp_path, sim_card, sim_psam):
    sim_card.save(tmp_path / "card.json")
    sim_psam.save(tmp_path / "psam.json")
    return tmp_path / "card.json", tmp_path / "psam.json"


class Served:
    """A `unioncard sim serve` process and PC/SC transports to its card and PSAM."""

    def __init__(self, daemon, card: Path, psam: Path, *options: str) -> None:
        if not isinstance(daemon, PcscdDaemon):
            pytest.skip("needs a pcscd of this test run")
        self.card = PcscTransport(vpcd_reader_name(0))
        self.psam = PcscTransport(vpcd_reader_name(1))
        self.card.wait_for_card(5, present=False)  # an earlier card has left
        self.psam.wait_for_card(5, present=False)
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLI, "sim", "serve", str(card), "--psam", str(psam),
             "--port", str(daemon.vpcd_port), *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            for transport in (self.card, self.psam):
                transport.wait_for_card(15)
                transport.power_on()
        except TransportError as exc:
            raise AssertionError(f"{exc}; sim serve said:\n{self.kill()}") from exc

    def rig(self, keys) -> PurseRig:
        """The terminal engine's rig on the served card and PSAM."""
        return PurseRig(Channel(self.card), Channel(self.psam), keys)

    def kill(self, sig: int = signal.SIGKILL) -> str:
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=10)
        self.card.close()
        self.psam.close()
        return err


def purchase(rig: PurseRig, amount: int) -> None:
    """A bus fare through the engine: approved, MAC2 accepted by the PSAM, TAC verified."""
    outcome = rig.purchase("transit", amount)
    assert outcome.decision is Decision.APPROVED and not outcome.warnings, outcome.reason
    assert outcome.record is not None
    assert outcome.record.tac == expected_tac(rig.keys, outcome.record)


def reopened(path: Path) -> SimulatedCard:
    card = SimulatedCard.load(path)
    card.power_on()  # recovers a torn journal, as a reader's power-up would
    return card


def test_purchases_trace_and_clean_stop(pcscd_daemon, images, sim_keystore, tmp_path):
    card_path, psam_path = images
    trace = tmp_path / "apdus.txt"
    served = Served(pcscd_daemon, card_path, psam_path, "--trace", str(trace), "--seed", "5")
    try:
        rig = served.rig(sim_keystore)
        purchase(rig, 30)
        answer = rig.card.transmit(cmd.get_challenge())
        assert answer.sw == 0x9000 and len(answer.data) == 4
        challenge = answer.data
    finally:
        err = served.kill(signal.SIGTERM)
    assert served.process.returncode == 0, err
    assert "stopped after" in err
    assert reopened(card_path).purse("transit").balance == START_BALANCE - 30
    records = list(read_records(trace.open("rb")))
    commands = [r for r in records if r.direction is Direction.COMMAND]
    assert {r.device for r in commands} == {Device.CARD, Device.PSAM}
    assert records[-1].data == challenge + b"\x90\x00"
    assert len(records) == 2 * len(commands)

    # The same seed gives the same card randomness.
    again = Served(pcscd_daemon, card_path, psam_path, "--seed", "5")
    try:
        rig = again.rig(sim_keystore)
        purchase(rig, 30)
        assert rig.card.transmit(cmd.get_challenge()).data == challenge
    finally:
        again.kill(signal.SIGTERM)


# Measured here: killed at once, the card has not committed; 2-5 ms later the kill lands
# between the commit (saved to the image) and the answer, or just after the answer.
@pytest.mark.parametrize("delay", [0.0, 0.002, 0.004])
def test_sigkill_during_debit_reopens_consistent(pcscd_daemon, images, sim_keystore, delay):
    card_path, psam_path = images
    acknowledged = 0
    debits_sent = 0
    served = Served(pcscd_daemon, card_path, psam_path)
    try:
        rig = served.rig(sim_keystore)
        for _ in range(2):
            purchase(rig, AMOUNT)
            debits_sent += 1
            acknowledged += 1
        prepared = prepare_debit(rig.card, rig.psam, "transit", AMOUNT, when=rig.tick())
        outcome: dict[str, object] = {}

        def debit() -> None:
            try:
                answer = rig.card.transmit(prepared.command)
            except (TransportError, CardError) as exc:
                outcome["error"] = exc
                return
            outcome["answer"] = answer

        sender = threading.Thread(target=debit)
        sender.start()
        debits_sent += 1
        time.sleep(delay)
    finally:
        served.kill()
    sender.join(10)
    assert not sender.is_alive()
    if "answer" in outcome:
        answer = outcome["answer"]
        assert isinstance(answer, ResponseAPDU)
        assert answer.sw == 0x9000 and len(answer.data) == 8  # TAC and MAC2
        acknowledged += 1

    card = reopened(card_path)
    purse = card.purse("transit")
    assert acknowledged <= purse.offline_seq <= debits_sent  # nothing acknowledged is lost
    assert purse.balance == START_BALANCE - AMOUNT * purse.offline_seq  # and no half debit
    assert purse.log()[0].seq == purse.offline_seq - 1
    assert purse.proof is not None and purse.proof[0] == purse.offline_seq
    assert sorted(p.name for p in card_path.parent.glob("*.json")) == ["card.json", "psam.json"]
    psam = reopened(psam_path)
    assert psam.psam() is not None


def test_a_served_image_has_one_user(pcscd_daemon, sim_keystore, tmp_path):
    """Reliability items 3 and 4: while a card is served, a second serve of its image, a
    terminal command on it and a forced reissue are refused, and what the served card
    spends stays spent."""
    from click.testing import CliRunner

    from unioncard.cli import root

    sheet = tmp_path / "members.csv"
    sheet.write_text("name,member_no,organization,category,id_number\n"
                     "张三,20260001,市总工会,hardship,11010519491231002X\n"
                     "李四,20260002,区总工会,,440524198001010013\n", encoding="utf-8")
    out = tmp_path / "cards"
    issue = ["card", "issue", "--members", str(sheet), "--out", str(out), "--transit-balance",
             str(START_BALANCE), "--valid-from", "2026-01-01", "--valid-until", "2030-12-31"]
    assert CliRunner().invoke(root, issue).exit_code == 0
    card_path, psam_path = out / "20260001-card.json", out / "psam-000000000001.json"
    served = Served(pcscd_daemon, card_path, psam_path)
    try:
        rig = served.rig(sim_keystore)
        purchase(rig, 10)
        second = subprocess.run(
            [sys.executable, "-c", CLI, "sim", "serve", str(card_path), "--psam",
             str(psam_path), "--port", str(pcscd_daemon.vpcd_port + 2)],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.strip().startswith(
            f"unioncard: error: {card_path}: in use by unioncard sim serve "
            f"(pid {served.process.pid})")
        tap = CliRunner().invoke(root, [
            "tap", "--mode", "bus", "--amount", "10", "--card", str(card_path), "--psam",
            str(psam_path), "--journal",
            str(tmp_path / "journal.sqlite")])
        assert tap.exit_code == 2 and "in use by unioncard sim serve" in tap.stderr
        reissued = CliRunner().invoke(root, [*issue, "--force"])  # the PSAM is served too
        assert reissued.exit_code == 1 and str(reissued.exception).startswith(
            f"{psam_path}: in use by unioncard sim serve")
        reissued = CliRunner().invoke(root, [*issue, "--force", "--terminal-id",
                                             "000000000002", "--json"])
        assert reissued.exit_code == 1, reissued.output
        refused = json.loads(reissued.stdout)["refused"]
        assert [e["member_no"] for e in refused] == ["20260001"]
        assert "in use by unioncard sim serve" in refused[0]["reason"]
        purchase(rig, 10)  # the serve goes on with its card, not a stale one
    finally:
        err = served.kill(signal.SIGTERM)
    assert served.process.returncode == 0, err
    assert reopened(card_path).purse("transit").balance == START_BALANCE - 20
    assert reopened(card_path).purse("transit").offline_seq == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "20260001-card.json", "20260002-card.json", "issued.json", "psam-000000000001.json",
        "psam-000000000002.json"]
