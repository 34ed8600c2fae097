"""Random command sequences with random power cuts keep the purse's books straight.

A Hypothesis state machine runs purchases, loads, CAPP purchases, bad MACs, proofs,
resets and torn transactions (the power cut at a random NVM write of DEBIT or CREDIT)
on both purses of one card, and keeps a model.  Invariants: for each purse, balance =
initial + loads - purchases; counters never go back; the log holds one record per
transaction (at most ten); the card never hits an internal error.
"""

import datetime as dt

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from unioncard.apdu import CommandAPDU
from unioncard.applet_sim import MemberData, PowerLoss, issue_member_card, issue_psam
from unioncard.applet_sim.scenarios import PurseTerminal
from unioncard.crypto import Keystore
from unioncard.crypto import purse as pc

KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31))
INITIAL = {"transit": 20_000, "etc": 30_000}
MAX_BALANCE = 100_000

apps = st.sampled_from(["transit", "etc"])
amounts = st.integers(0, 6_000)


class PurseBooks(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.card = issue_member_card(MEMBER, KEYS, card_no=99,
                                      transit_balance=INITIAL["transit"],
                                      etc_balance=INITIAL["etc"], random_source=7)
        self.psam = issue_psam(KEYS, "0102030405FF", random_source=8)
        self.card.power_on()
        self.psam.power_on()
        self.t = PurseTerminal(self.card.transmit, self.psam.transmit, KEYS)
        self.loads = {"transit": 0, "etc": 0}
        self.purchases = {"transit": 0, "etc": 0}
        self.transactions = {"transit": 0, "etc": 0}
        self.mac_errors = {"transit": 0, "etc": 0}
        self.last_proof = {"transit": None, "etc": None}
        self.seen = {app: (0, 0) for app in INITIAL}
        self.cuts = 0

    # --- model ---------------------------------------------------------------------------

    def balance(self, app):
        return INITIAL[app] + self.loads[app] - self.purchases[app]

    def locked(self, app):
        return self.mac_errors[app] >= 3

    def select(self, app):
        """Select the purse; a locked one refuses the SELECT itself (9303)."""
        self.t.select(app, 0x9303 if self.locked(app) else 0x9000)

    def purchased(self, app, amount, seq, tx_type, answer):
        self.purchases[app] += amount
        self.transactions[app] += 1
        self.mac_errors[app] = 0
        self.last_proof[app] = (seq + 1, tx_type, answer)

    def loaded(self, app, amount):
        self.loads[app] += amount
        self.transactions[app] += 1
        self.mac_errors[app] = 0

    # --- rules ---------------------------------------------------------------------------

    @rule(app=apps, amount=amounts, capp=st.booleans())
    def purchase(self, app, amount, capp):
        capp = capp and app == "etc"
        self.select(app)
        if self.locked(app):
            return
        if amount > self.balance(app):
            self.t.initialize(0x03 if capp else 0x01, amount, 0x9401)
            return
        record = b"\xaa\x29" + bytes([amount & 0xFF]) * 41 if capp else None
        p = self.t.purchase(amount, capp_record=record)
        self.purchased(app, amount, p.offline_seq, p.tx_type, p.mac2 + p.tac)

    @rule(app=apps, amount=amounts)
    def load(self, app, amount):
        self.select(app)
        if self.locked(app):
            return
        if self.balance(app) + amount > MAX_BALANCE:
            self.t.initialize(0x00, amount, 0x9402)
            return
        self.t.load(amount)
        self.loaded(app, amount)

    @rule(app=apps, on_load=st.booleans())
    def bad_mac(self, app, on_load):
        self.select(app)
        if self.locked(app):
            return
        if on_load:
            if self.balance(app) + 1 > MAX_BALANCE:
                return
            self.t.initialize(0x00, 1)
            self.t.card.expect(CommandAPDU(0x80, 0x52, 0, 0, self.t.date + self.t.time
                                           + bytes(4), 4), 0x9302)
        else:
            init = self.t.initialize(0x01, 0)
            seq, _ = self.t.mac1(init, 0, 0x06)
            self.t.debit(seq, bytes(4), 0x9302)
        self.mac_errors[app] += 1

    @rule(app=apps, kind=st.sampled_from(["purchase", "capp", "load"]), amount=amounts,
          write=st.integers(1, 15), after=st.booleans())
    def torn(self, app, kind, amount, write, after):
        """The power is cut at one NVM write of the committing command."""
        if kind == "capp" and app != "etc":
            kind = "purchase"
        self.select(app)
        if self.locked(app):
            return
        t, purse = self.t, self.card.purse(app)
        seq_before = purse.online_seq if kind == "load" else purse.offline_seq
        if kind == "load":
            if self.balance(app) + amount > MAX_BALANCE:
                return
            init = t.initialize(0x00, amount)
            seq = int.from_bytes(init[4:6], "big")
            seslk = pc.load_session_key(t.card_keys.load, init[8:12], seq)
            mac2 = pc.load_mac2(seslk, amount, 2, t.terminal_id, t.date, t.time)
            command = CommandAPDU(0x80, 0x52, 0, 0, t.date + t.time + mac2, 4)
        else:
            if amount > self.balance(app):
                return
            tx_type = 0x09 if kind == "capp" else 0x06
            init = t.initialize(0x03 if kind == "capp" else 0x01, amount)
            seq = int.from_bytes(init[4:6], "big")
            terminal_seq, mac1 = t.mac1(init, amount, tx_type)
            if kind == "capp":
                t.card.expect(CommandAPDU(0x80, 0xDC, 0xAA, 0xC8, b"\xaa\x29" + b"\x5a" * 41))
            command = CommandAPDU(0x80, 0x54, 1, 0, terminal_seq.to_bytes(4, "big") + t.date
                                  + t.time + mac1, 8)
        assert seq == seq_before
        self.card.faults.cut_at_write(write, after=after)
        try:
            answer = self.card.transmit(command.to_bytes())
            self.card.faults.disarm()  # the command had fewer writes than that
            assert answer[-2:] == b"\x90\x00"
        except PowerLoss:
            self.cuts += 1
            self.card.power_on()
        seq_after = purse.online_seq if kind == "load" else purse.offline_seq
        assert seq_after in (seq_before, seq_before + 1)
        if seq_after == seq_before:
            return  # did not happen: the invariants check that nothing moved
        if kind == "load":
            self.loaded(app, amount)
            return
        self.select(app)
        proof = t.card.expect(CommandAPDU(0x80, 0x5A, 0, tx_type, (seq + 1).to_bytes(2, "big"),
                                          8), length=8)
        t.psam.expect(CommandAPDU(0x80, 0x72, 0, 0, proof[:4]))  # MAC2 from the lost answer
        self.purchased(app, amount, seq, tx_type, proof)

    @rule(app=apps)
    def prove_last_purchase(self, app):
        self.select(app)
        if self.locked(app) or self.last_proof[app] is None:
            return
        seq, tx_type, answer = self.last_proof[app]
        got = self.t.card.expect(CommandAPDU(0x80, 0x5A, 0, tx_type, seq.to_bytes(2, "big"), 8),
                                 length=8)
        assert got == answer

    @rule(warm=st.booleans())
    def power_cycle(self, warm):
        if warm:
            self.card.reset()
        else:
            self.card.power_off()
            self.card.power_on()

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def books_balance(self):
        for app in INITIAL:
            purse = self.card.purse(app)
            assert purse.balance == self.balance(app)
            assert purse.online_seq + purse.offline_seq == self.transactions[app]
            assert len(purse.log()) == min(10, self.transactions[app])
            assert purse.mac_errors == min(self.mac_errors[app], 3)

    @invariant()
    def counters_never_go_back(self):
        for app in INITIAL:
            purse = self.card.purse(app)
            now = (purse.online_seq, purse.offline_seq)
            assert now[0] >= self.seen[app][0] and now[1] >= self.seen[app][1]
            self.seen[app] = now

    @invariant()
    def no_internal_error(self):
        assert self.card.last_internal_error is None
        assert self.card.nvm.journal == []


PurseBooks.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPurseBooks = PurseBooks.TestCase
