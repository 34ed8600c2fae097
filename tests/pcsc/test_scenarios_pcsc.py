"""The purse scenarios through pcscd + vpcd + pyscard, on T=1 and T=0 simulated cards,
and a power cut during DEBIT seen through the virtual reader."""

import pytest

from unioncard.apdu import CommandAPDU
from unioncard.applet_sim import Step
from unioncard.applet_sim.scenarios import SCENARIOS, PurseTerminal, run_scenario
from unioncard.errors import TransportError

CASES = [(name, app) for name, s in SCENARIOS.items() for app in s.apps if not s.destructive]
DESTRUCTIVE = [(name, app) for name, s in SCENARIOS.items() for app in s.apps if s.destructive]


@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_every_purse_scenario_through_pcscd(pcsc_serve, sim_card, sim_psam, sim_keystore,
                                            protocol):
    sim_card.protocol = sim_psam.protocol = protocol
    reader = pcsc_serve(sim_card, sim_psam)
    assert reader.transport.active_protocol == protocol
    card, psam = reader.transport.transmit, reader.psam_transport.transmit
    for name, app in CASES:
        options = {"power_cycle": reader.transport.reset} if name == "transaction_prove" else {}
        result = run_scenario(name, card, psam, sim_keystore, app=app, **options)
        with reader.bridge.lock:
            assert sim_card.purse(app).balance == result.balance_after, (name, app)
    for name, app in DESTRUCTIVE:  # last: it locks the purse for good
        run_scenario(name, card, psam, sim_keystore, app=app)
        with reader.bridge.lock:
            assert sim_card.purse(app).state.name == "LOCKED"
    assert sim_card.last_internal_error is None


@pytest.mark.parametrize(("cut", "committed"), [("before", False), ("after", True)])
def test_power_cut_during_debit_through_the_reader(virtual_reader, sim_card, fault_injector,
                                                   sim_keystore, cut, committed):
    transport = virtual_reader.transport
    terminal = PurseTerminal(transport.transmit, virtual_reader.psam_transport.transmit,
                             sim_keystore)
    terminal.select("transit")
    before = terminal.balance()
    init = terminal.initialize(0x01, 250)
    terminal_seq, mac1 = terminal.mac1(init, 250, 0x06)
    if cut == "before":
        fault_injector.cut_before(Step.PURSE_BALANCE)
    else:
        fault_injector.cut_after(Step.COMMIT)
    with pytest.raises(TransportError, match="did not answer"):
        terminal.debit(terminal_seq, mac1)
    assert fault_injector.fired is not None

    transport.wait_for_card(5, present=False)  # torn out of the reader...
    transport.wait_for_card(5)  # ...and back: the terminal powers it up again
    transport.power_on()
    terminal.select("transit")
    assert terminal.balance() == before - (250 if committed else 0)
    offline_seq = int.from_bytes(init[4:6], "big")
    prove = CommandAPDU(0x80, 0x5A, 0x00, 0x06, (offline_seq + 1).to_bytes(2, "big"), 8)
    proof = terminal.card.send(prove)
    if committed:  # the card has the TAC of the purchase whose answer was lost
        assert proof.sw == 0x9000 and len(proof.data) == 8
    else:
        assert proof.sw == 0x9406
