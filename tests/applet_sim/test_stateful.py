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

from unioncard.apdu import purse as cmd
from unioncard.applet_sim import MemberData, PowerLoss, issue_member_card, issue_psam
from unioncard.crypto import Keystore, derive_card_keys
from unioncard.crypto import purse as pc
from unioncard.terminal import Decision
from unioncard.testing.purse_rig import (
    PurseRig,
    expected_tac,
    prepare_credit,
    prepare_debit,
    select_application,
)

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
        # whole transactions go through the terminal engine; single commands through the
        # rig's links, built with unioncard.apdu.purse
        self.rig = PurseRig.in_process(self.card, self.psam, KEYS)
        self.link, self.sam = self.rig.card, self.rig.psam
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
        assert select_application(self.link, app).sw == (0x9303 if self.locked(app) else 0x9000)

    def sw_of_last(self, ins, since):
        """The card's status word for the last command with this INS after exchange ``since``."""
        exchange = self.rig.answer_to(ins, since=since)
        assert exchange is not None and exchange.response is not None
        return exchange.response.sw

    def debit_answer(self):
        """TAC then MAC2, as the card answered the last DEBIT."""
        exchange = self.rig.answer_to(0x54)
        assert exchange.response.sw == 0x9000 and len(exchange.response.data) == 8
        return exchange.response.data

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
        if app == "etc" and not capp:
            self.plain_etc_purchase(amount)
            return
        # a bus fare on the transit purse, an ETC exit (composite purchase) on the ETC purse
        mark = self.rig.count
        outcome = self.rig.purchase(app, amount)
        if amount > self.balance(app):
            assert outcome.decision is Decision.DECLINED, outcome.reason
            assert self.sw_of_last(0x50, mark) == 0x9401
            return
        assert outcome.decision is Decision.APPROVED and not outcome.warnings, outcome.reason
        record = outcome.record
        assert record.tac == expected_tac(KEYS, record)
        assert record.charged_amount == amount and record.tx_type == (0x09 if capp else 0x06)
        answer = self.debit_answer()
        self.purchased(app, amount, record.card_seq, record.tx_type, answer[4:] + answer[:4])

    def plain_etc_purchase(self, amount):
        """A plain purchase (type 06) on the ETC purse: the engine has none (its ETC lanes
        make composite purchases), so the commands are sent here."""
        if amount > self.balance("etc"):
            initialize = cmd.initialize_for_purchase(amount, self.rig.terminal_id)
            assert self.link.transmit(initialize).sw == 0x9401
            return
        debit = prepare_debit(self.link, self.sam, "etc", amount, when=self.rig.tick())
        answer = self.link.transmit(debit.command)
        assert answer.sw == 0x9000 and len(answer.data) == 8
        assert self.sam.transmit(cmd.sam_credit_for_purchase(answer.data[4:])).sw == 0x9000
        dtk = derive_card_keys(KEYS.by_version(debit.key_version), debit.card.diversifier).tac
        assert answer.data[:4] == pc.purchase_tac(dtk, amount, 0x06, debit.terminal_id,
                                                  debit.terminal_seq, debit.date, debit.time)
        self.purchased("etc", amount, debit.offline_seq, 0x06,
                       answer.data[4:] + answer.data[:4])

    @rule(app=apps, amount=amounts)
    def load(self, app, amount):
        self.select(app)
        if self.locked(app):
            return
        if amount == 0:  # the engine loads positive amounts only: a load of 0 by hand
            load = prepare_credit(self.link, KEYS, app, 0, when=self.rig.tick(),
                                  terminal_id=self.rig.terminal_id)
            answer = self.link.transmit(load.command)
            assert answer.sw == 0x9000 and len(answer.data) == 4
            self.loaded(app, amount)
            return
        mark = self.rig.count
        outcome = self.rig.load(app, amount)
        if self.balance(app) + amount > MAX_BALANCE:
            assert outcome.decision is Decision.DECLINED, outcome.reason
            assert self.sw_of_last(0x50, mark) == 0x9402
            return
        assert outcome.decision is Decision.APPROVED, outcome.reason
        assert outcome.record.tac == expected_tac(KEYS, outcome.record)
        self.loaded(app, amount)

    @rule(app=apps, on_load=st.booleans())
    def bad_mac(self, app, on_load):
        self.select(app)
        if self.locked(app):
            return
        when = self.rig.tick()
        if on_load:
            if self.balance(app) + 1 > MAX_BALANCE:
                return
            load = prepare_credit(self.link, KEYS, app, 1, when=when,
                                  terminal_id=self.rig.terminal_id)
            assert self.link.transmit(load.credit(mac2=bytes(4))).sw == 0x9302
        else:
            debit = prepare_debit(self.link, self.sam, app, 0, when=when)
            assert self.link.transmit(debit.debit(mac1=bytes(4))).sw == 0x9302
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
        purse = self.card.purse(app)
        seq_before = purse.online_seq if kind == "load" else purse.offline_seq
        when = self.rig.tick()
        if kind == "load":
            if self.balance(app) + amount > MAX_BALANCE:
                return
            load = prepare_credit(self.link, KEYS, app, amount, when=when,
                                  terminal_id=self.rig.terminal_id)
            seq, command = load.online_seq, load.command
        else:
            if amount > self.balance(app):
                return
            tx_type = 0x09 if kind == "capp" else 0x06
            record = b"\xaa\x29" + b"\x5a" * 41 if kind == "capp" else None
            debit = prepare_debit(self.link, self.sam, app, amount, when=when,
                                  capp_record=record)
            assert debit.tx_type == tx_type
            seq, command = debit.offline_seq, debit.command
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
        proof = self.link.transmit(cmd.get_transaction_prove(tx_type, seq + 1))
        assert proof.sw == 0x9000 and len(proof.data) == 8
        # MAC2 from the lost answer
        assert self.sam.transmit(cmd.sam_credit_for_purchase(proof.data[:4])).sw == 0x9000
        self.purchased(app, amount, seq, tx_type, proof.data)

    @rule(app=apps)
    def prove_last_purchase(self, app):
        self.select(app)
        if self.locked(app) or self.last_proof[app] is None:
            return
        seq, tx_type, answer = self.last_proof[app]
        got = self.link.transmit(cmd.get_transaction_prove(tx_type, seq))
        assert (got.data, got.sw) == (answer, 0x9000)

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
