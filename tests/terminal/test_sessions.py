"""The terminal sessions driven with scripted card, PSAM, host and journal answers.

No simulator and no PC/SC: `drive` walks a session step by step, checks every
command it sends against the script (hex), answers it with the scripted
response, answers `Journal` steps with a `JournalReceipt` and records every
step.  It is the model for testing your own use of the engine::

    run = drive(TransitPurchase(Mode.BUS, 200, now=NOW), [
        psam("00A40000023F00", "9000"),
        psam("00B0960006", "310100001234 9000"),
        psam("00A40000021001", "9000"),
        card("00A4 0400 0A F0554E494F4E43415244 00", "6A82"),   # no member application
        ...
        journal(),                                                # Journal(begin=...)
        card("8054 0100 0F ...", "CC970111 BAD5D442 9000"),       # DEBIT
        psam("8072 0000 04 BAD5D442", "9000"),
    ])
    assert run.outcome.decision is Decision.APPROVED

The card answers are built with the project's crypto and the test keys
(docs/protocol.md §2.7, §6, §10.7: card 42, terminal 310100001234), so MAC1,
MAC2 and TAC are the ones a real card would give.  Recovery of interrupted
transactions is in test_recovery.py (which reuses this driver), toll tables in
test_tolls.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from unioncard.apdu import ResponseAPDU, records
from unioncard.apdu.member import MemberRecord, MemberStatus, encode_member_template
from unioncard.crypto import Keystore, derive_card_keys
from unioncard.crypto import purse as pc
from unioncard.errors import TransportError
from unioncard.offline import Application, OfflineRecord, RecordFlags
from unioncard.tariffs import Mode, default_rules
from unioncard.terminal import (
    Authorize,
    CardRead,
    Decision,
    EtcEntry,
    EtcExit,
    Journal,
    JournalReceipt,
    KeystoreLoadHost,
    Load,
    LoadAuthorization,
    LoadRequest,
    Outcome,
    Resolution,
    Send,
    Session,
    TransitPurchase,
    parse_toll_table,
)
from unioncard.terminal.session import ResolutionState, SessionError

# --- the scripted driver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One step the session must ask for, and the script's answer to it.

    ``kind`` is ``card``, ``psam``, ``journal`` or ``authorize``; ``command`` the
    APDU expected (hex, spaces ignored); ``reply`` the response (hex: data then
    SW) or, for ``authorize``, a `LoadAuthorization` or a load host.  With
    ``fail`` the answer never comes: the driver calls ``session.fail(fail)``.
    """

    kind: str
    command: str = ""
    reply: Any = None
    fail: BaseException | None = None


def card(command: str, reply: str = "9000", *, fail: BaseException | None = None) -> Expect:
    return Expect("card", command, reply, fail)


def psam(command: str, reply: str = "9000", *, fail: BaseException | None = None) -> Expect:
    return Expect("psam", command, reply, fail)


def journal(*, fail: BaseException | None = None) -> Expect:
    """A `Journal` step, answered ``JournalReceipt(next id)`` (``None`` without ``begin``)."""
    return Expect("journal", fail=fail)


def authorize(reply: Any, *, fail: BaseException | None = None) -> Expect:
    return Expect("authorize", reply=reply, fail=fail)


def _hex(text: str) -> str:
    return "".join(text.split()).upper()


@dataclass
class Transcript:
    """What a driven session did: its outcome and every step it asked for, in order."""

    outcome: Outcome
    steps: list[Any]

    @property
    def journal(self) -> list[Journal]:
        return [s for s in self.steps if isinstance(s, Journal)]

    @property
    def sent(self) -> list[str]:
        """``card 80500102…`` / ``psam 00B0960006``: every APDU sent."""
        return [f"{s.device.value} {s.apdu.to_bytes().hex().upper()}"
                for s in self.steps if isinstance(s, Send)]


def _show(step: Any) -> str:
    if isinstance(step, Send):
        return f"{step.device.value} {step.apdu.to_bytes().hex().upper()} ({step.what})"
    return "journal write" if isinstance(step, Journal) else "load host authorization"


def drive(session: Session, script: Sequence[Expect], *, first_id: int = 1) -> Transcript:
    """Run ``session`` against ``script``: each step must be the next scripted one."""
    left, steps = list(script), []
    next_id = first_id
    step = session.start()
    while not isinstance(step, Outcome):
        steps.append(step)
        where = f"step {len(steps)}, {_show(step)}"
        assert left, f"{where}: beyond the end of the script"
        want = left.pop(0)
        if isinstance(step, Send):
            assert want.kind == step.device.value, f"{where}: the script expects {want}"
            assert step.apdu.to_bytes().hex().upper() == _hex(want.command), \
                f"{where}: the script expects {_hex(want.command)}"
        else:
            kind = "journal" if isinstance(step, Journal) else "authorize"
            assert want.kind == kind, f"{where}: the script expects {want}"
        if want.fail is not None:
            step = session.fail(want.fail)
            continue
        reply: Any
        if isinstance(step, Send):
            reply = ResponseAPDU.from_bytes(bytes.fromhex(_hex(want.reply)))
        elif isinstance(step, Journal):
            reply = JournalReceipt(next_id if step.begin else None)
            next_id += step.begin is not None
        else:
            host = want.reply
            reply = host.authorize(step.request) if hasattr(host, "authorize") else host
        step = session.receive(reply)
    assert not left, (f"the session ended ({step.decision.value}: {step.reason}) with "
                      f"{len(left)} scripted steps left, the next {left[0]}")
    return Transcript(step, steps)


# --- the card: card 42 of docs/protocol.md §2.7 and §10.7 -----------------------------------------

H = bytes.fromhex
TERMINAL = "310100001234"
NOW = dt.datetime(2026, 3, 15, 8, 30, 15)
KEYS = Keystore.test()

ISSUER = "10000000FFFFFFFF"
F_TRANSIT = "5500000000000042"
TRANSIT_KEYS = derive_card_keys(KEYS.by_version(1), H(F_TRANSIT))
TRANSIT_EF15 = f"{ISSUER} 0202 1000{F_TRANSIT} 20260101 20301231 55 01"
ORDINARY_EF15 = f"{ISSUER} 0202 1000{F_TRANSIT} 20260101 20301231 01 00"

F_ETC = "1101000000000042"
ETC_KEYS = derive_card_keys(KEYS.by_version(2), H(F_ETC))
PLATE = "BEA9413132333435 00000000"  # 京A12345, GBK, 00-padded to 12 bytes
ETC_EF15 = f"11010000FFFFFFFF 16 40 1101 {F_ETC} 20260101 20301231 {PLATE} 55 0000"

SELECT_MEMBER = "00A4 0400 0A F0554E494F4E43415244 00"
READ_MEMBER = "00B0 8100 00"
SELECT_TRANSIT = "00A4 0400 08 A000000632010105 00"
READ_TRANSIT_EF15 = "00B0 9500 1E"
SELECT_MF, SELECT_ETC, READ_ETC_EF15 = "00A4 0000 02 3F00", "00A4 0000 02 1001", "00B0 9500 2B"

MEMBER = MemberRecord("20260001", "张三", "市总工会", 0x01, MemberStatus.ACTIVE,
                      dt.date(2026, 1, 1), dt.date(2030, 12, 31))
MEMBER_TEMPLATE = ("7039 DF4108 3230323630303031 DF4206 E5BCA0E4B889"
                   " DF430C E5B882E680BBE5B7A5E4BC9A DF440101 DF450101"
                   " DF4604 20260101 DF4704 20301231")  # docs/protocol.md §4.9


def template(member: MemberRecord) -> str:
    return encode_member_template(member).hex()


def read_terminal_id() -> list[Expect]:
    """The PSAM's MF, its terminal id, then its purchase DF selected."""
    return [psam("00A4 0000 02 3F00", "9000"), psam("00B0 9600 06", f"{TERMINAL} 9000"),
            psam("00A4 0000 02 1001", "9000")]


def read_member(member_template: str | None = MEMBER_TEMPLATE) -> list[Expect]:
    """The member application; None: the card has none (6A82)."""
    if member_template is None:
        return [card(SELECT_MEMBER, "6A82")]
    return [card(SELECT_MEMBER, "9000"), card(READ_MEMBER, f"{member_template} 9000")]


def identify(*, ef15: str = TRANSIT_EF15, member_template: str | None = MEMBER_TEMPLATE,
             psam_id: bool = True) -> list[Expect]:
    """PSAM terminal id, member application, transit purse and its EF 0015."""
    return [*(read_terminal_id() if psam_id else []), *read_member(member_template),
            card(SELECT_TRANSIT, "9000"), card(READ_TRANSIT_EF15, f"{ef15} 9000")]


def identify_etc(*, ef15: str = ETC_EF15,
                 member_template: str | None = MEMBER_TEMPLATE) -> list[Expect]:
    return [*read_terminal_id(), *read_member(member_template), card(SELECT_MF, "9000"),
            card(SELECT_ETC, "9000"), card(READ_ETC_EF15, f"{ef15} 9000")]


def bcd(when: dt.datetime) -> tuple[str, str]:
    return when.strftime("%Y%m%d"), when.strftime("%H%M%S")


def purchase(amount: int, *, balance: int = 2000, seq: int = 5, random: str = "5A3C9E71",
             terminal_seq: int = 0x12345, when: dt.datetime = NOW,
             capp_record: str | None = None) -> list[Expect]:
    """INITIALIZE, 80 70, [UPDATE CAPP DATA CACHE], journal, DEBIT, 80 72 as a genuine card
    answers them: a CAPP record makes it the ETC purse's composite purchase (type 09)."""
    capp = capp_record is not None
    keys, kv, f, tx = (ETC_KEYS, 2, F_ETC, 9) if capp else (TRANSIT_KEYS, 1, F_TRANSIT, 6)
    date, time = bcd(when)
    sespk = pc.purchase_session_key(keys.purchase, H(random), seq, terminal_seq)
    mac1 = pc.purchase_mac1(sespk, amount, tx, H(TERMINAL), H(date), H(time)).hex()
    mac2 = pc.purchase_mac2(sespk, amount).hex()
    tac = pc.purchase_tac(keys.tac, amount, tx, H(TERMINAL), terminal_seq, H(date), H(time)).hex()
    return [
        card(f"8050 {3 if capp else 1:02X}02 0B 01 {amount:08X} {TERMINAL} 0F",
             f"{balance:08X} {seq:04X} 000000 {kv:02X} 00 {random} 9000"),
        psam(f"8070 0000 1C {random} {seq:04X} {amount:08X} {tx:02X} {date} {time} {kv:02X} 00 "
             f"{f} 08", f"{terminal_seq:08X} {mac1} 9000"),
        *([card(f"80DC AAC8 2B {capp_record}")] if capp else []),
        journal(),
        card(f"8054 0100 0F {terminal_seq:08X} {date} {time} {mac1} 08", f"{tac} {mac2} 9000"),
        psam(f"8072 0000 04 {mac2}"),
    ]


def log_record(seq: int, amount: int, tx_type: int, terminal: str, when: dt.datetime) -> str:
    """An EF 0018 record (23 bytes, hex)."""
    date, time = bcd(when)
    return f"{seq:04X} 000000 {amount:08X} {tx_type:02X} {terminal} {date} {time}"


def tap(amount: int = 200, **options: Any) -> TransitPurchase:
    return TransitPurchase(Mode.BUS, amount, now=options.pop("now", NOW), **options)


# --- the transit bus purchase of a member card ----------------------------------------------------


def test_member_bus_fare_sends_exactly_the_protocol_commands():
    run = drive(tap(200), [
        psam("00A4 0000 02 3F00", "9000"),                      # the PSAM's MF
        psam("00B0 9600 06", "310100001234 9000"),              # its terminal id
        psam("00A4 0000 02 1001", "9000"),                      # its purchase DF
        card("00A4 0400 0A F0554E494F4E43415244 00",
             "6F1C840AF0554E494F4E43415244A50E500C554E494F4E204D454D424552 9000"),
        card("00B0 8100 00", f"{MEMBER_TEMPLATE} 9000"),
        card("00A4 0400 08 A000000632010105 00", "9000"),
        card("00B0 9500 1E", "10000000FFFFFFFF02021000550000000000004220260101203012315501 9000"),
        card("8050 0102 0B 01 000000B4 310100001234 0F",
             "000007D0 0005 000000 01 00 5A3C9E71 9000"),
        psam("8070 0000 1C 5A3C9E71 0005 000000B4 06 20260315 083015 01 00 5500000000000042 08",
             "00012345 25E2DDF1 9000"),
        journal(),
        card("8054 0100 0F 00012345 20260315 083015 25E2DDF1 08", "CC970111 BAD5D442 9000"),
        psam("8072 0000 04 BAD5D442", "9000"),
    ])
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert (out.flow, out.list_amount, out.charged_amount) == ("bus", 200, 180)
    assert (out.balance_before, out.balance_after, out.tac) == (2000, 1820, H("CC970111"))
    assert out.rules == ("bus-member-10",)
    assert out.warnings == () and out.journal_id == 1 and not out.recovered
    assert out.details["member"]["organization"] == "市总工会"

    rules = default_rules()
    record = out.record
    assert record == OfflineRecord(
        terminal_id=H(TERMINAL), terminal_seq=0x12345, issuer=H(ISSUER),
        diversifier=H(F_TRANSIT), application=Application.TRANSIT, card_seq=5, key_version=1,
        tx_type=0x06, mode=int(Mode.BUS), card_type=0x55, category_flags=0x01, member_status=1,
        organization="市总工会", card_expiry=dt.date(2030, 12, 31), list_amount=200,
        charged_amount=180, balance_after=1820, rules=(rules.index("bus-member-10"),), when=NOW,
        tac=H("CC970111"), flags=RecordFlags(0), ruleset_version=H(rules.version), rounding=0)
    assert not record.flags & RecordFlags.NO_TAC

    # journaled before the DEBIT as it would be if the card committed; completed after it
    (begun,) = run.journal
    assert run.steps.index(begun) == len(run.steps) - 3  # then DEBIT, 80 72
    assert begun.resolutions == () and begun.begin is not None
    assert begun.begin.id is None and begun.begin.flow == "bus"
    assert begun.begin.balance_before == 2000
    assert begun.begin.draft.flags == RecordFlags.NO_TAC and begun.begin.draft.tac == bytes(4)
    assert begun.begin.draft == dataclasses.replace(record, tac=bytes(4),
                                                    flags=RecordFlags.NO_TAC)
    assert out.resolutions == (Resolution(1, ResolutionState.COMPLETED, record),)

    as_json = json.loads(json.dumps(out.to_dict()))
    assert (as_json["tac"], as_json["journal_id"], as_json["record"]["flags"]) == (
        "CC970111", 1, [])


def test_the_script_fragments_give_the_worked_example():
    """`identify` and `purchase` compute what docs/protocol.md §2.7.2 and §10.7 show for
    card 42: the other tests' cards answer as a genuine card would."""
    assert [(e.kind, _hex(e.command), _hex(e.reply or "")) for e in purchase(180)] == [
        ("card", "805001020B01000000B43101000012340F", "000007D0000500000001005A3C9E719000"),
        ("psam", "807000001C5A3C9E710005000000B4062026031508301501005500000000000042"
                 "08", "0001234525E2DDF19000"),
        ("journal", "", ""),
        ("card", "805401000F000123452026031508301525E2DDF108", "CC970111BAD5D4429000"),
        ("psam", "8072000004BAD5D442", "9000"),
    ]
    assert _hex(identify()[-1].reply) == _hex(
        "10000000FFFFFFFF02021000550000000000004220260101203012315501 9000")


def test_a_given_terminal_id_reads_no_psam_id():
    run = drive(tap(200, terminal_id=H(TERMINAL)), [*identify(psam_id=False), *purchase(180)])
    assert run.outcome.decision is Decision.APPROVED
    assert run.sent[0] == "card 00A404000AF0554E494F4E4341524400"


# --- who pays the full fare -----------------------------------------------------------------------


def test_non_member_card_pays_the_full_fare():
    run = drive(tap(200), [*identify(ef15=ORDINARY_EF15, member_template=None),
                           *purchase(200)])
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert (out.list_amount, out.charged_amount, out.rules) == (200, 200, ())
    assert "member" not in out.details
    record = out.record
    assert (record.card_type, record.member_status, record.organization) == (0x01, 0, "")
    assert (record.rules, record.list_amount, record.charged_amount) == ((), 200, 200)


def test_member_card_without_member_application_is_priced_by_ef_0015():
    run = drive(tap(200), [*identify(member_template=None), *purchase(180)])
    assert run.outcome.charged_amount == 180
    assert run.outcome.record.member_status == 0


@pytest.mark.parametrize("member", [
    MemberRecord("20260001", "张三", "市总工会", 0x01, MemberStatus.REPORTED_LOST,
                 dt.date(2026, 1, 1), dt.date(2030, 12, 31)),
    MemberRecord("20260001", "张三", "市总工会", 0x01, MemberStatus.CANCELLED,
                 dt.date(2026, 1, 1), dt.date(2030, 12, 31)),
    MemberRecord("20260001", "张三", "市总工会", 0x01, MemberStatus.ACTIVE,
                 dt.date(2020, 1, 1), dt.date(2025, 12, 31)),  # membership expired
    MemberRecord("20260001", "张三", "市总工会", 0x01, MemberStatus.ACTIVE,
                 dt.date(2026, 6, 1), dt.date(2030, 12, 31)),  # not yet a member
], ids=["reported-lost", "cancelled", "expired", "not-yet-valid"])
def test_a_member_not_active_today_pays_the_full_fare(member):
    run = drive(tap(200), [*identify(member_template=template(member)), *purchase(200)])
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert (out.charged_amount, out.rules) == (200, ())
    assert out.record.member_status == int(member.status)
    # the record keeps the card type the fare was priced with, so settlement prices it alike
    assert out.record.card_type == 0x01


def test_an_unreadable_member_template_counts_as_absent():
    run = drive(tap(200), [*read_terminal_id(), card(SELECT_MEMBER, "9000"),
                           card(READ_MEMBER, "7003DF4101 9000"),  # truncated TLV
                           card(SELECT_TRANSIT, "9000"), card(READ_TRANSIT_EF15,
                                                              f"{TRANSIT_EF15} 9000"),
                           *purchase(180)])
    assert run.outcome.decision is Decision.APPROVED
    assert run.outcome.record.organization == ""


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sw", "balance", "reason"), [
    ("6A82", None, "the card has no transit purse"),
    ("6283", "6985", "the card's transit purse is blocked"),
    ("6283", "9303", "the card's transit purse is locked for good"),  # a locked purse's FCI
    ("9303", None, "the card's transit purse is locked for good"),
])
def test_an_unusable_transit_purse_is_declined(sw, balance, reason):
    script = [*read_terminal_id(), *read_member(), card(SELECT_TRANSIT, sw)]
    if balance is not None:  # 6283: GET BALANCE tells blocked (6985) from locked (9303)
        script.append(card("805C000204", balance))
    run = drive(tap(200), script)
    assert run.outcome.decision is Decision.DECLINED
    assert run.outcome.reason == reason
    assert run.journal == []


def test_a_selected_purse_without_ef_0015_is_declined_as_absent():
    run = drive(tap(200), [*read_terminal_id(), *read_member(), card(SELECT_TRANSIT, "9000"),
                           card(READ_TRANSIT_EF15, "6A82")])
    assert run.outcome.decision is Decision.DECLINED
    assert run.outcome.reason == "the card has no transit purse"


def test_a_malformed_ef_0015_is_an_error():
    run = drive(tap(200), [*read_terminal_id(), *read_member(), card(SELECT_TRANSIT, "9000"),
                           card(READ_TRANSIT_EF15,
                                f"{ISSUER} 0202 1000{F_TRANSIT} 20260101 20301331 5501 9000")])
    assert run.outcome.decision is Decision.ERROR
    assert "READ BINARY EF 0015 answered malformed data" in run.outcome.reason


def test_a_purse_that_refuses_select_oddly_is_an_error():
    run = drive(tap(200), [*read_terminal_id(), *read_member(), card(SELECT_TRANSIT, "6F00")])
    assert run.outcome.decision is Decision.ERROR
    assert "6F00" in run.outcome.reason


@pytest.mark.parametrize(("now", "reason"), [
    (dt.datetime(2031, 1, 1, 8, 0), "card expired on 2030-12-31"),
    (dt.datetime(2025, 12, 31, 23, 59, 59), "card not valid before 2026-01-01"),
])
def test_a_card_outside_its_validity_is_declined(now, reason):
    run = drive(tap(200, now=now), identify())
    assert run.outcome.decision is Decision.DECLINED
    assert run.outcome.reason == reason
    assert run.outcome.details["card"]["valid_until"] == "2030-12-31"


def test_the_last_valid_day_is_valid():
    last = dt.datetime(2030, 12, 31, 23, 59, 59)
    run = drive(tap(200, now=last), [*identify(), *purchase(180, when=last)])
    assert run.outcome.decision is Decision.APPROVED


def test_insufficient_balance_reads_the_balance_and_says_both_amounts():
    run = drive(tap(200), [
        *identify(),
        card(f"8050 0102 0B 01 000000B4 {TERMINAL} 0F", "9401"),
        card("805C 0002 04", "0000007B 9000"),
    ])
    out = run.outcome
    assert out.decision is Decision.DECLINED
    assert out.reason == "insufficient balance: 1.23 yuan on the card, 1.80 yuan to pay"
    assert (out.balance_before, out.balance_after, out.list_amount) == (123, 123, 200)
    assert out.charged_amount is None and run.journal == []


@pytest.mark.parametrize(("sw", "decision", "reason"), [
    ("6985", Decision.DECLINED, "the purse is blocked"),
    ("9303", Decision.DECLINED, "the purse is locked for good"),
    ("9402", Decision.DECLINED, "the card's transaction counter is exhausted"),
    ("6A81", Decision.ERROR, "the card refused the purchase: 6A81"),
])
def test_initialize_refusals(sw, decision, reason):
    run = drive(tap(200), [*identify(), card(f"8050 0102 0B 01 000000B4 {TERMINAL} 0F", sw)])
    assert run.outcome.decision is decision
    assert run.outcome.reason.startswith(reason)


def test_psam_without_the_card_key_version_is_an_error_before_any_journal():
    run = drive(tap(200), [
        *identify(),
        card(f"8050 0102 0B 01 000000B4 {TERMINAL} 0F", "000007D0 0005 000000 01 00 5A3C9E71 9000"),
        psam("8070 0000 1C 5A3C9E71 0005 000000B4 06 20260315 083015 01 00 5500000000000042 08",
             "9403"),
    ])
    out = run.outcome
    assert out.decision is Decision.ERROR
    assert out.reason == ("the PSAM has no purchase key of key version 01 (the card's): "
                          "wrong PSAM for this card")
    assert run.journal == [] and out.resolutions == ()


def test_a_psam_that_does_not_give_its_terminal_id_is_an_error():
    run = drive(tap(200), [psam("00A4 0000 02 3F00", "9000"), psam("00B0960006", "6A82")])
    assert run.outcome.decision is Decision.ERROR
    assert run.outcome.reason.startswith("the PSAM does not give its terminal id: 6A82")


@pytest.mark.parametrize(("sw", "decision", "reason"), [
    # 9302: this terminal's PSAM does not hold the card's keys, the terminal's fault
    ("9302", Decision.ERROR, "the card refused MAC1 (9302)"),
    ("6985", Decision.DECLINED, "the card refused the debit: 6985"),
])
def test_a_refused_debit_voids_the_journaled_transaction(sw, decision, reason):
    script = [*identify(), *purchase(180)]
    script[-2] = card(script[-2].command, sw)
    run = drive(tap(200), script[:-1])
    out = run.outcome
    assert out.decision is decision
    assert out.reason.startswith(reason)
    assert "nothing was charged" in out.reason
    (resolution,) = out.resolutions
    assert (resolution.transaction_id, resolution.state) == (1, ResolutionState.VOIDED)
    assert resolution.record is None and sw in resolution.reason
    assert resolution.mac_refused is (sw == "9302")  # not tried again within the window
    assert out.tac is None and out.record is None and out.charged_amount is None
    assert out.journal_id is None  # nothing stays pending


def _refused_mac1(*, when: dt.datetime = NOW, diversifier: str = F_TRANSIT) -> OfflineRecord:
    """The draft of a purchase voided because this card refused this terminal's MAC1."""
    return OfflineRecord(
        terminal_id=H(TERMINAL), terminal_seq=0x12345, issuer=H(ISSUER),
        diversifier=H(diversifier), application=Application.TRANSIT, card_seq=5, key_version=1,
        tx_type=0x06, mode=int(Mode.BUS), card_type=0x55, list_amount=200, charged_amount=180,
        balance_after=1820, when=when, tac=bytes(4), flags=RecordFlags.NO_TAC)


def test_a_card_that_refused_this_terminals_mac1_is_not_tried_again_for_a_day():
    later = NOW + dt.timedelta(hours=20)
    run = drive(tap(200, now=later, mac_refusals=[_refused_mac1()]), identify())
    out = run.outcome
    assert out.decision is Decision.ERROR
    assert out.reason.startswith("this card refused this terminal's MAC1 at "
                                 "2026-03-15T08:30:15: not tried again")
    assert run.journal == []  # and no INITIALIZE: the card counts no further MAC error


@pytest.mark.parametrize("refusal", [
    _refused_mac1(when=NOW - dt.timedelta(hours=25)),  # more than a day ago
    _refused_mac1(diversifier="5500000000000043"),  # another card, just one
], ids=["a-day-ago", "another-card"])
def test_an_old_mac1_refusal_or_another_cards_does_not_stop_the_tap(refusal):
    run = drive(tap(200, mac_refusals=[refusal]), [*identify(), *purchase(180)])
    assert run.outcome.decision is Decision.APPROVED


def test_two_cards_refusing_this_terminals_mac1_put_it_out_of_service():
    refusals = [_refused_mac1(diversifier="5500000000000043"),
                _refused_mac1(diversifier="5500000000000044")]
    run = drive(tap(200, now=NOW + dt.timedelta(hours=1), mac_refusals=refusals), identify())
    assert run.outcome.decision is Decision.ERROR
    assert run.outcome.reason.startswith("2 cards refused this terminal's MAC1 since "
                                         "2026-03-15T08:30:15: the terminal is out of service")


def test_mac2_refused_by_the_psam_is_declined_but_the_debit_is_completed():
    script = [*identify(), *purchase(180)]
    script[-1] = psam(script[-1].command, "9302")
    out = drive(tap(200), script).outcome
    assert out.decision is Decision.DECLINED
    assert "MAC2 does not verify (9302)" in out.reason
    assert "go to settlement" in out.reason
    (resolution,) = out.resolutions
    assert resolution.state is ResolutionState.COMPLETED
    assert resolution.record == out.record and out.record.tac == H("CC970111")
    assert out.charged_amount == 180 and out.balance_after == 1820


# --- fail(): the reply that never comes -----------------------------------------------------------

LOST = TransportError("card removed")


def _with(script: list[Expect], index: int, **change: Any) -> list[Expect]:
    """``script`` up to ``index``, whose entry gets ``change`` (fail=..., reply=...)."""
    want = script[index]
    return [*script[:index], Expect(want.kind, want.command, change.get("reply", want.reply),
                                    change.get("fail"))]


def _index(script: list[Expect], prefix: str) -> int:
    return next(i for i, e in enumerate(script) if _hex(e.command).startswith(_hex(prefix)))


def test_a_link_lost_before_the_journal_is_an_error_and_nothing_is_journaled():
    script = [*identify(), *purchase(180)]
    run = drive(tap(200), _with(script, _index(script, "8050"), fail=LOST))
    out = run.outcome
    assert out.decision is Decision.ERROR
    assert out.reason == ("card removed (at INITIALIZE FOR PURCHASE (card)); "
                          "nothing was charged")
    assert run.journal == [] and out.journal_id is None and out.resolutions == ()


def test_a_journal_that_cannot_write_is_an_error_and_no_debit_is_sent():
    script = [*identify(), *purchase(180)]
    at = next(i for i, e in enumerate(script) if e.kind == "journal")
    run = drive(tap(200), _with(script, at, fail=OSError("disk full")))
    assert run.outcome.decision is Decision.ERROR
    assert run.outcome.reason == "disk full (at journal write); nothing was charged"
    assert not any(s.startswith("card 8054") for s in run.sent)


def test_a_link_lost_while_the_debit_is_outstanding_leaves_it_pending():
    script = [*identify(), *purchase(180)]
    run = drive(tap(200), _with(script, _index(script, "8054"), fail=LOST), first_id=12)
    out = run.outcome
    assert out.decision is Decision.INTERRUPTED
    assert out.journal_id == 12
    assert out.reason.startswith("interrupted after the value command was sent: card removed "
                                 "(at DEBIT FOR PURCHASE (card))")
    assert "stays pending" in out.reason
    assert out.resolutions == () and out.record is None


def test_a_link_lost_at_the_mac2_check_after_the_debit_is_approved_with_a_warning():
    script = [*identify(), *purchase(180)]
    run = drive(tap(200), _with(script, len(script) - 1, fail=TransportError("PSAM gone")))
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert out.tac == H("CC970111") and out.charged_amount == 180
    (warning,) = out.warnings
    assert warning.startswith("the PSAM did not verify MAC2 (PSAM gone")
    assert out.resolutions[0].state is ResolutionState.COMPLETED


def test_a_malformed_answer_before_the_debit_is_an_error():
    script = [*identify(), *purchase(180)]
    run = drive(tap(200), _with(script, _index(script, "8050"),
                                reply="000007D0 0005 000000 01 00 5A3C9E 9000"))  # 14 bytes
    out = run.outcome
    assert out.decision is Decision.ERROR
    assert out.reason == ("the card broke the protocol at INITIALIZE FOR PURCHASE (card): "
                          "INITIALIZE FOR PURCHASE answered 14 bytes, expected 15; nothing was "
                          "charged")
    assert run.journal == []


def test_a_malformed_debit_answer_is_interrupted():
    script = [*identify(), *purchase(180)]
    run = drive(tap(200), _with(script, _index(script, "8054"), reply="CC970111 BAD5D4 9000"))
    out = run.outcome
    assert out.decision is Decision.INTERRUPTED
    assert out.journal_id == 1 and "DEBIT FOR PURCHASE answered 7 bytes" in out.reason


def test_a_balance_below_the_amount_with_9000_is_an_error():
    script = [*identify(), *purchase(180, balance=100)]
    out = drive(tap(200), script[:len(identify()) + 1]).outcome
    assert out.decision is Decision.ERROR
    assert "nothing was charged" in out.reason


def test_a_member_of_a_long_named_organization_can_pay():
    long_name = MemberRecord("20260001", "张三", "中国铁路北京局集团有限公司北京车辆段工会委员会",
                             0x01, MemberStatus.ACTIVE, dt.date(2026, 1, 1),
                             dt.date(2030, 12, 31))
    run = drive(tap(200), [*identify(member_template=template(long_name)), *purchase(180)])
    assert run.outcome.decision is Decision.APPROVED


@pytest.mark.parametrize("route", ["1路", "Airport Express Line 1"])
def test_a_route_the_record_cannot_hold_is_refused_up_front(route):
    with pytest.raises(ValueError, match="route"):
        TransitPurchase(Mode.BUS, 200, now=NOW, route=route)


# --- misuse ---------------------------------------------------------------------------------------


def test_a_reply_of_the_wrong_kind_names_the_state():
    session = tap(200)
    session.start()
    with pytest.raises(SessionError, match=r"bus in state 'SELECT PSAM MF \(psam\)' expected "
                                           r"a ResponseAPDU and got JournalReceipt"):
        session.receive(JournalReceipt(1))
    assert session.state == "SELECT PSAM MF (psam)"  # still waiting for it


def test_a_journal_step_wants_a_journal_receipt():
    session = tap(200, terminal_id=H(TERMINAL))
    script = [*identify(psam_id=False), *purchase(180)]
    step = session.start()
    for want in script:
        if want.kind == "journal":
            break
        step = session.receive(ResponseAPDU.from_bytes(H(_hex(want.reply))))
    assert isinstance(step, Journal)
    with pytest.raises(SessionError, match="'journal write' expected a JournalReceipt"):
        session.receive(ResponseAPDU(b"", 0x9000))


def test_receive_or_fail_after_the_outcome_raises():
    session = tap(200)
    drive(session, [psam("00A4 0000 02 3F00", "9000"), psam("00B0960006", "6A82")])
    assert session.state == "done"
    with pytest.raises(SessionError, match=r"receive\(\) after the outcome \(error\)"):
        session.receive(ResponseAPDU(b"", 0x9000))
    with pytest.raises(SessionError, match=r"fail\(\) after the outcome"):
        session.fail(LOST)


def test_receive_or_fail_before_start_raises():
    with pytest.raises(SessionError, match=r"receive\(\) before start\(\)"):
        tap(200).receive(ResponseAPDU(b"", 0x9000))
    with pytest.raises(SessionError, match=r"fail\(\) before start\(\)"):
        tap(200).fail(LOST)


def test_an_authorize_step_wants_a_load_authorization():
    session = load()
    step = session.start()
    for want in [*identify(psam_id=False), card(LOAD_INIT, LOAD_ANSWER)]:
        step = session.receive(ResponseAPDU.from_bytes(H(_hex(want.reply))))
    assert isinstance(step, Authorize) and session.state == "load host authorization"
    with pytest.raises(SessionError, match="expected a LoadAuthorization and got ResponseAPDU"):
        session.receive(ResponseAPDU(H("6EBD41E1"), 0x9000))


def test_start_twice_raises():
    session = tap(200)
    session.start()
    with pytest.raises(SessionError, match=r"start\(\) called twice"):
        session.start()


def test_start_after_the_outcome_raises():
    session = tap(200)
    drive(session, [psam("00A4 0000 02 3F00", "9000"), psam("00B0960006", "6A82")])
    with pytest.raises(SessionError):
        session.start()


# --- loads ----------------------------------------------------------------------------------------

LOAD_AT = dt.datetime(2026, 3, 15, 8, 45)
LOAD_INIT = f"8050 0002 0B 01 00002710 {TERMINAL} 10"  # 100.00 yuan
LOAD_ANSWER = "0000071C 0003 01 00 1A2B3C4D 57E79FF0 9000"  # §2.7.3
CREDIT = "8052 0000 0B 20260315 084500 6EBD41E1 04"


def load(amount: int = 10000, **options: Any) -> Load:
    return Load(Application.TRANSIT, amount, terminal_id=H(TERMINAL),
                now=options.pop("now", LOAD_AT), **options)


def test_a_load_asks_the_host_with_the_initialize_answer():
    host = KeystoreLoadHost(KEYS)
    run = drive(load(), [
        *identify(psam_id=False),
        card(LOAD_INIT, LOAD_ANSWER),
        authorize(host),
        journal(),
        card(CREDIT, "80D88DFC 9000"),
    ], first_id=41)
    (asked,) = [s for s in run.steps if isinstance(s, Authorize)]
    assert asked.request == LoadRequest(
        key_version=1, diversifier=H(F_TRANSIT), balance=1820, online_seq=3,
        random=H("1A2B3C4D"), amount=10000, terminal_id=H(TERMINAL), when=LOAD_AT,
        mac1=H("57E79FF0"), issuer=H("10000000FFFFFFFF"))
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert out.reason == "loaded 10000 fen onto the transit purse"
    assert (out.balance_before, out.balance_after, out.charged_amount) == (1820, 11820, 10000)
    assert out.tac == H("80D88DFC") and out.journal_id == 41
    record = out.record
    assert (record.tx_type, record.mode, record.card_seq, record.terminal_seq) == (2, 0, 3, 41)
    assert (record.list_amount, record.charged_amount, record.rules) == (10000, 10000, ())
    assert record.ruleset_version == bytes(32) and record.flags == RecordFlags(0)
    assert run.journal[0].begin.draft.terminal_seq == 0  # known once journaled
    assert out.resolutions == (Resolution(41, ResolutionState.COMPLETED, record),)


def test_a_refused_authorization_is_declined_and_nothing_is_journaled():
    run = drive(load(), [
        *identify(psam_id=False), card(LOAD_INIT, LOAD_ANSWER),
        authorize(LoadAuthorization(False, reason="daily load limit reached")),
    ])
    assert run.outcome.decision is Decision.DECLINED
    assert run.outcome.reason == "the load host refused: daily load limit reached"
    assert run.outcome.balance_before == 1820 and run.journal == []


def test_a_card_whose_load_mac1_does_not_verify_is_declined_by_the_host():
    run = drive(load(), [*identify(psam_id=False),
                         card(LOAD_INIT, "0000071C 0003 01 00 1A2B3C4D 57E79FF1 9000"),
                         authorize(KeystoreLoadHost(KEYS))])
    assert run.outcome.decision is Decision.DECLINED
    assert run.outcome.reason == ("the load host refused: the card's load MAC1 does not verify: "
                                  "the card is not genuine or its keys differ")
    assert run.journal == []


def test_an_unreachable_host_is_an_error():
    run = drive(load(), [*identify(psam_id=False), card(LOAD_INIT, LOAD_ANSWER),
                         authorize(None, fail=TransportError("host unreachable"))])
    assert run.outcome.decision is Decision.ERROR
    assert run.outcome.reason == ("host unreachable (at load host authorization); nothing was "
                                  "charged")


def test_credit_refused_is_declined_and_voided():
    run = drive(load(), [
        *identify(psam_id=False), card(LOAD_INIT, LOAD_ANSWER),
        authorize(LoadAuthorization(True, H("00000000"))), journal(),
        card("8052 0000 0B 20260315 084500 00000000 04", "9302"),
    ])
    out = run.outcome
    assert out.decision is Decision.DECLINED
    assert out.reason == "the card refused the host's MAC2 (9302); nothing was loaded"
    (resolution,) = out.resolutions
    assert (resolution.transaction_id, resolution.state) == (1, ResolutionState.VOIDED)


def test_a_link_lost_during_credit_is_interrupted():
    run = drive(load(), [*identify(psam_id=False), card(LOAD_INIT, LOAD_ANSWER),
                         authorize(KeystoreLoadHost(KEYS)), journal(),
                         card(CREDIT, fail=LOST)])
    assert run.outcome.decision is Decision.INTERRUPTED and run.outcome.journal_id == 1


@pytest.mark.parametrize(("sw", "decision", "reason"), [
    ("9402", Decision.DECLINED, "the card refuses to load 10000 fen: the balance would pass"),
    ("6985", Decision.DECLINED, "the purse is blocked"),
    ("6A81", Decision.ERROR, "the card refused the load: 6A81"),
])
def test_initialize_for_load_refusals(sw, decision, reason):
    out = drive(load(), [*identify(psam_id=False), card(LOAD_INIT, sw)]).outcome
    assert out.decision is decision and out.reason.startswith(reason)


def _load_request(**change: Any) -> LoadRequest:
    fields = dict(key_version=1, diversifier=H(F_TRANSIT), balance=1820, online_seq=3,
                  random=H("1A2B3C4D"), amount=10000, terminal_id=H(TERMINAL), when=LOAD_AT,
                  mac1=H("57E79FF0"))
    return LoadRequest(**{**fields, **change})


def test_keystore_load_host_gives_the_load_mac2():
    answer = KeystoreLoadHost(KEYS).authorize(_load_request())
    seslk = pc.load_session_key(TRANSIT_KEYS.load, H("1A2B3C4D"), 3)
    assert answer.approved
    assert answer.mac2 == pc.load_mac2(seslk, 10000, 2, H(TERMINAL), H("20260315"), H("084500"))
    assert answer.mac2 == H("6EBD41E1")  # §2.7.3


def test_keystore_load_host_refuses_a_wrong_mac1():
    answer = KeystoreLoadHost(KEYS).authorize(_load_request(mac1=H("57E79FF1")))
    assert not answer.approved and answer.mac2 == b""
    assert answer.reason == ("the card's load MAC1 does not verify: the card is not genuine or "
                             "its keys differ")
    # MAC1 covers the balance: a card lying about it is caught
    assert not KeystoreLoadHost(KEYS).authorize(_load_request(balance=1821)).approved


def test_keystore_load_host_refuses_an_unknown_key_version():
    answer = KeystoreLoadHost(KEYS).authorize(_load_request(key_version=9))
    assert not answer.approved
    assert answer.reason == ("the load host has no such keys: the keystore has no key "
                             "version 09")


def test_keystore_load_host_picks_the_keys_of_the_cards_issuer():
    """A host serving two city unions: the issuer's own keys at the card's key version."""
    other_issuer = bytes.fromhex("20000000FFFFFFFF")
    text = KEYS.to_toml().replace("test_keys = true", "test_keys = false")
    text += ('\n[[purse]]\napplication = "transit"\nkey_version = 0x01\n'
             f'issuer = "{other_issuer.hex().upper()}"\n'
             + "".join(f'{name} = "{"11" * 16}"\n'
                       for name in ("purchase_mk", "load_mk", "tac_mk", "maintenance_mk")))
    both = Keystore.from_toml(text)
    request = _load_request()
    assert KeystoreLoadHost(both).authorize(request).approved  # no issuer: any issuer's keys
    theirs = dataclasses.replace(request, issuer=other_issuer)
    assert not KeystoreLoadHost(both).authorize(theirs).approved  # that issuer's keys differ


# --- ETC entry and exit ---------------------------------------------------------------------------

ETC_NOW = dt.datetime(2026, 3, 15, 9, 0)  # 2026-03-15 01:00:00 UTC = 69B60490
READ_TOLL_RECORD = "00B2 01CC 2B"
EMPTY_TOLL_RECORD = "AA29" + "00" * 41
TOLLS = parse_toll_table("""
network = "1101"
[[toll]]
entry = "0203"
exit = "0007"
fen = { 1 = 10000, 2 = 15000 }
[[toll]]
entry = "0011"
exit = "0007"
fen = { 1 = 5500 }
""", "tolls.toml")


def toll_record(*, status: int, network: str = "1101", station: str = "0203", lane: int = 5,
                unix: int = 0x69B60490, vehicle_class: int = 1) -> str:
    """EF 0019 as the engine writes it: no marker station, staff number or shift."""
    return (f"AA29 00 {network} {station} {lane:02X} {unix:08X} {vehicle_class:02X} "
            f"{status:02X} {'00' * 9} 000000 00 {PLATE} 00000000")


def etc_purchase(amount: int, record: str, *, when: dt.datetime = ETC_NOW) -> list[Expect]:
    return purchase(amount, balance=20000, seq=0, random="0BADF00D", terminal_seq=0x12346,
                    when=when, capp_record=record)


def entry(**options: Any) -> EtcEntry:
    return EtcEntry(network=0x1101, station=0x0203, lane=5, vehicle_class=1, now=ETC_NOW,
                    **options)


def test_etc_entry_writes_the_entry_record_with_a_capp_purchase_of_zero():
    record = toll_record(status=3)
    run = drive(entry(), [*identify_etc(), card(READ_TOLL_RECORD, f"{EMPTY_TOLL_RECORD} 9000"),
                          *etc_purchase(0, record)])
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert out.reason == "entry recorded on the card" and out.warnings == ()
    # network 1101, station 0203, lane 05, 2026-03-15 09:00 UTC+8, class 01, status 03
    update = _hex("80DC AAC8 2B AA29 00 1101 0203 05 69B60490 01 03 000000000000000000"
                  " 000000 00 BEA9413132333435 00000000 00000000")
    assert run.sent[-5:] == [
        f"card {_hex('8050 0302 0B 01 00000000 310100001234 0F')}",  # CAPP INITIALIZE of 0
        run.sent[-4],  # 80 70 (type 09, key version 02)
        f"card {update}",
        run.sent[-2], run.sent[-1],  # DEBIT, 80 72
    ]
    assert run.sent[-4].startswith("psam 807000001C0BADF00D0000000000000920260315090000"
                                   "02001101000000000042")
    assert out.details["toll"] == {"network": "1101", "station": "0203", "lane": 5,
                                   "vehicle_class": 1, "status": "entry"}
    assert (out.charged_amount, out.record.tx_type, out.record.mode) == (0, 9, int(Mode.ETC))
    assert (out.record.station, out.record.vehicle_class, out.record.key_version) == (0x0203, 1, 2)
    assert out.record.application is Application.ETC
    assert out.record.diversifier == H(F_ETC)


def test_etc_entry_over_an_open_entry_warns():
    earlier = toll_record(status=3, station="0011", unix=0x69B60490 - 3600)
    run = drive(entry(), [*identify_etc(), card(READ_TOLL_RECORD, f"{earlier} 9000"),
                          *etc_purchase(0, toll_record(status=3))])
    assert run.outcome.decision is Decision.APPROVED
    assert run.outcome.warnings == ("the card had an open entry (station 0011, "
                                    "2026-03-15T08:00:00) with no exit: overwritten",)


def test_etc_on_a_card_without_the_etc_application_is_declined():
    run = drive(entry(), [*read_terminal_id(), *read_member(), card(SELECT_MF, "9000"),
                          card(SELECT_ETC, "6A82")])
    assert run.outcome.decision is Decision.DECLINED
    assert run.outcome.reason == "the card has no ETC application"


EXIT_AT = dt.datetime(2026, 3, 15, 10, 10)


def exit_lane(**options: Any) -> EtcExit:
    options.setdefault("tolls", TOLLS)
    options.setdefault("now", EXIT_AT)
    return EtcExit(network=0x1101, station=0x0007, lane=2, **options)


def exit_record(vehicle_class: int = 1) -> str:
    unix = 0x69B60490 + 70 * 60
    return toll_record(status=4, station="0007", lane=2, unix=unix, vehicle_class=vehicle_class)


def test_etc_exit_charges_the_table_toll_less_the_member_benefit():
    # the script checks the exit record written (status 04) and the amount charged
    run = drive(exit_lane(), [
        *identify_etc(), card(READ_TOLL_RECORD, f"{toll_record(status=3)} 9000"),
        *etc_purchase(9500, exit_record(), when=EXIT_AT)])
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert (out.list_amount, out.charged_amount, out.rules) == (10000, 9500, ("etc-member-5",))
    assert out.details["toll"] == {
        "network": "1101", "station": "0007", "lane": 2, "vehicle_class": 1, "status": "exit",
        "entry_station": "0203", "entry_time": "2026-03-15T09:00:00", "toll_fen": 10000}
    record = out.record
    assert (record.station, record.entry_station, record.tx_type) == (0x0007, 0x0203, 9)
    assert record.list_amount == 10000 and record.charged_amount == 9500
    assert not out.reason.startswith("no entry")


def test_etc_exit_takes_the_vehicle_class_of_the_entry():
    run = drive(exit_lane(), [
        *identify_etc(), card(READ_TOLL_RECORD, f"{toll_record(status=3, vehicle_class=2)} 9000"),
        *etc_purchase(14250, exit_record(vehicle_class=2), when=EXIT_AT)])
    assert run.outcome.list_amount == 15000 and run.outcome.record.vehicle_class == 2


@pytest.mark.parametrize(("on_card", "note"), [
    (toll_record(status=4), "no entry on the card"),
    (EMPTY_TOLL_RECORD, "no entry on the card"),
    (toll_record(status=3, network="1201"), "entry on another network (1201)"),
    (toll_record(status=3, station="0999"), "no toll from entry station 0999 to this exit"),
], ids=["after-an-exit", "never-used", "other-network", "unknown-station"])
def test_etc_exit_without_a_usable_entry_charges_the_longest_toll(on_card, note):
    run = drive(exit_lane(), [*identify_etc(), card(READ_TOLL_RECORD, f"{on_card} 9000"),
                              *etc_purchase(9500, exit_record(), when=EXIT_AT)])
    out = run.outcome
    assert out.decision is Decision.APPROVED
    assert out.reason.startswith(f"{note}: charged the longest toll into this exit; ")
    assert (out.list_amount, out.charged_amount) == (10000, 9500)


def test_etc_exit_with_no_toll_into_the_exit_is_declined():
    lane = EtcExit(network=0x1101, station=0x0555, lane=2, tolls=TOLLS, now=EXIT_AT)
    run = drive(lane, [*identify_etc(), card(READ_TOLL_RECORD, f"{toll_record(status=3)} 9000")])
    out = run.outcome
    assert out.decision is Decision.DECLINED
    assert out.reason == ("the toll table has no toll into station 0555 for vehicle class 1 "
                          "(no toll from entry station 0203 to this exit)")
    assert not any(s.startswith("card 8050") for s in run.sent)


def test_etc_exit_amount_overrides_the_table():
    run = drive(exit_lane(amount=2000), [
        *identify_etc(), card(READ_TOLL_RECORD, f"{toll_record(status=3)} 9000"),
        *etc_purchase(1900, exit_record(), when=EXIT_AT)])
    out = run.outcome
    assert (out.list_amount, out.charged_amount) == (2000, 1900)
    assert out.reason.startswith("toll given by the lane; ")


# --- card read ------------------------------------------------------------------------------------

HOLDER = records.build(records.HOLDER, holder_type=0, staff_flag=0, name="张三",
                       id_number="110101199003071234", id_type=0).hex()
RIDE = records.build(records.TRANSIT_RECORD, tx_type=2, terminal_id=H("0000310100001234"),
                     transit_type=1, line_station=H("01020300000000"), amount=180,
                     balance_after=1820, when=H("20260315083015"), city_code=H("3100"),
                     institution=H("0102030405060708"), reserved=bytes(6)).hex()


def read_transit_purse(*, rides: bool = True) -> list[Expect]:
    """The transit purse read: EF 0015, balance, holder, log, and EF 001E (absent: 6A82)."""
    return [
        card(SELECT_TRANSIT, "9000"), card(READ_TRANSIT_EF15, f"{TRANSIT_EF15} 9000"),
        card("805C 0002 04", "0000071C 9000"),
        card("00B0 9600 37", f"{HOLDER} 9000"),
        card("00B2 01C4 17", f"{log_record(5, 180, 6, TERMINAL, NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        *([card("00B2 01F4 30", f"{RIDE} 9000"), card("00B2 02F4 30", "6A83")] if rides
          else [card("00B2 01F4 30", "6A82")]),
    ]


def test_card_read_of_a_member_card_without_etc():
    run = drive(CardRead(), [*read_member(), *read_transit_purse(),
                             card(SELECT_MF, "9000"), card(SELECT_ETC, "6A82")])
    out = run.outcome
    assert out.decision is Decision.APPROVED and out.reason == "card read"
    assert out.details["balances"] == {"transit": 1820}
    assert out.details["member"] == {
        "member_no": "20260001", "organization": "市总工会", "status": "active",
        "category_flags": "01", "valid_from": "2026-01-01", "valid_until": "2030-12-31",
        "name": "张三"}
    transit, etc = out.details["purses"]
    assert etc == {"application": "etc", "present": False,
                   "reason": "the card has no ETC application"}
    assert transit["present"] and transit["balance"] == 1820
    assert (transit["card_type"], transit["serial"]) == ("55", "10005500000000000042")
    assert transit["holder"] == {"name": "张三", "id_number": "110101********1234"}
    assert transit["log"] == [{"seq": 5, "type": "purchase", "amount": 180,
                               "terminal_id": TERMINAL, "date": "2026-03-15",
                               "time": "08:30:15"}]
    assert transit["transit_records"] == [{
        "type": "single ride", "terminal_id": "0000310100001234", "transit_type": 1,
        "line_station": "01020300000000", "amount": 180, "balance_after": 1820,
        "when": "2026-03-15T08:30:15", "city_code": "3100", "institution": "0102030405060708"}]
    assert run.journal == []


def test_card_read_unmasked_with_both_purses():
    run = drive(CardRead(unmask=True), [
        *read_member(None), *read_transit_purse(rides=False),
        card(SELECT_MF, "9000"), card(SELECT_ETC, "9000"),
        card(READ_ETC_EF15, f"{ETC_EF15} 9000"),
        card("805C 0002 04", "00001388 9000"),
        card("00B0 9600 37", "6A82"),
        card("00B2 01C4 17", "6A83"),
        card(READ_TOLL_RECORD, f"{toll_record(status=3)} 9000"),
    ])
    out = run.outcome
    assert out.details["balances"] == {"transit": 1820, "etc": 5000}
    assert out.details["member"] is None
    transit, etc = out.details["purses"]
    assert transit["holder"]["id_number"] == "110101199003071234"
    assert transit["transit_records"] == []  # no EF 001E on this card
    assert etc["plate"] == "京A12345" and etc["holder"] is None and etc["log"] == []
    assert etc["toll_record"] == {"status": 3, "network": "1101", "station": "0203", "lane": 5,
                                  "unix_time": 0x69B60490, "time": "2026-03-15T09:00:00+08:00",
                                  "vehicle_class": 1,
                                  "plate": "京A12345"}


def test_card_read_of_a_card_without_any_purse_is_declined():
    run = drive(CardRead(), [*read_member(None), card(SELECT_TRANSIT, "6A82"),
                             card(SELECT_MF, "9000"), card(SELECT_ETC, "6A82")])
    assert run.outcome.decision is Decision.DECLINED
    assert run.outcome.reason == "the card has neither a transit purse nor an ETC application"


def test_card_read_lost_link_is_an_error():
    run = drive(CardRead(), [card(SELECT_MEMBER, fail=TransportError("no card in reader"))])
    assert run.outcome.decision is Decision.ERROR
    assert run.outcome.reason == ("no card in reader (at SELECT member application (card)); "
                                  "nothing was charged")


# --- the driver itself ----------------------------------------------------------------------------


def test_drive_reports_a_command_that_is_not_the_scripted_one():
    with pytest.raises(AssertionError, match="step 1, psam 00A40000023F00"):
        drive(tap(200), [psam("00A4 0000 02 3F01", "9000")])


def test_drive_reports_scripted_steps_left_over():
    with pytest.raises(AssertionError, match="1 scripted steps left"):
        drive(tap(200), [psam("00A4 0000 02 3F00", "9000"), psam("00B0960006", "6A82"),
                         card("00", "9000")])


def test_a_card_read_again_at_the_exit_it_just_left_is_not_charged_twice():
    """The exit lane wrote status 04 at this plaza 40 s ago: no open entry, but not a
    missing one either; the longest toll would charge the trip a second time."""
    cst = dt.timezone(dt.timedelta(hours=8))
    forty_seconds_ago = int((EXIT_AT - dt.timedelta(seconds=40)).replace(tzinfo=cst).timestamp())
    left = toll_record(status=4, station="0007", unix=forty_seconds_ago)
    run = drive(exit_lane(now=EXIT_AT), [*identify_etc(),
                                         card(READ_TOLL_RECORD, f"{left} 9000")])
    out = run.outcome
    assert out.decision is Decision.DECLINED
    assert out.reason.startswith("the card left this plaza at ") and "already" in out.reason
    assert not any(s.startswith("card 8050") for s in run.sent)
