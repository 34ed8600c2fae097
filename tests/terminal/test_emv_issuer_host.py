"""The simulated issuer host: the ARQC it accepts and the ARPC it answers agree with pyemv
computations on the same keys and data; its response codes follow its account rules."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest

from unioncard.crypto import Keystore
from unioncard.terminal.issuer_host import (
    Account,
    AuthorizationRequest,
    IssuerHost,
    SimulatedIssuer,
)

AID = bytes.fromhex("A000000333010101")
PAN, PSN = "6230123456789012345", "01"
KEYS = Keystore.test()
IMK = KEYS.emv_issuer_keys(AID).ac_mk
DKI = KEYS.emv_issuer_keys(AID).dki
CVR = bytes.fromhex("03A0A000")
IAD = bytes([0x07, DKI, 0x01]) + CVR + b"\x01"
WHEN = dt.datetime(2026, 12, 2, 10, 30)


def quiet(fn, *args):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def values(atc: int, amount: int = 10_000) -> dict[int, bytes]:
    return {0x9F02: bytes.fromhex(f"{amount:012d}"), 0x9F03: bytes(6),
            0x9F1A: bytes.fromhex("0156"), 0x95: bytes.fromhex("0200008000"),
            0x5F2A: bytes.fromhex("0156"), 0x9A: bytes.fromhex("261202"), 0x9C: b"\x00",
            0x9F37: bytes.fromhex("11223344"), 0x82: bytes.fromhex("5C00"),
            0x9F36: atc.to_bytes(2, "big")}


def pyemv_session_key(atc: int) -> bytes:
    """The card's side computed with pyemv only: option A, then the PBOC CVN 01 key."""
    from pyemv.kd import derive_icc_mk_a
    from pyemv.tools import encrypt_tdes_ecb

    udk = quiet(derive_icc_mk_a, IMK, PAN, PSN)
    block = bytes(6) + atc.to_bytes(2, "big") + bytes(6) + (atc ^ 0xFFFF).to_bytes(2, "big")
    return quiet(encrypt_tdes_ecb, udk, block)  # type: ignore[no-any-return]


def request(atc: int = 7, amount: int = 10_000, *, arqc: bytes | None = None,
            expiry: dt.date | None = dt.date(2030, 12, 31)) -> AuthorizationRequest:
    from pyemv.ac import generate_ac

    data = b"".join(values(atc, amount).values()) + CVR
    if arqc is None:
        arqc = quiet(generate_ac, pyemv_session_key(atc), data)
    return AuthorizationRequest(pan=PAN, psn=PSN, atc=atc, arqc=arqc,
                                values=values(atc, amount), iad=IAD, amount=amount, when=WHEN,
                                aid=AID, expiry=expiry)


@pytest.mark.parametrize("atc", [1, 7, 0x1234, 0xFFFF])
def test_arqc_accepted_and_arpc_agree_with_pyemv(atc: int) -> None:
    from pyemv.ac import generate_arpc_1

    host = SimulatedIssuer.from_keystore(KEYS)
    assert isinstance(host, IssuerHost)
    asked = request(atc)
    answer = host.authorize(asked)
    assert answer.approved and answer.arc == b"00", answer.reason
    assert answer.arpc == quiet(generate_arpc_1, pyemv_session_key(atc), asked.arqc, b"00")
    assert answer.issuer_authentication_data == answer.arpc + b"00"
    assert answer.authorization_code == f"{atc:06d}"


def test_a_wrong_arqc_is_declined_05_with_the_arpc_of_05() -> None:
    from pyemv.ac import generate_arpc_1

    good = request()
    bad = request(arqc=bytes([good.arqc[0] ^ 1]) + good.arqc[1:])
    answer = SimulatedIssuer(IMK).authorize(bad)
    assert answer.arc == b"05" and not answer.approved and "ARQC" in answer.reason
    assert answer.arpc == quiet(generate_arpc_1, pyemv_session_key(7), bad.arqc, b"05")


@pytest.mark.parametrize(("account", "amount", "expiry", "arc"), [
    (Account(balance=5_000), 10_000, dt.date(2030, 12, 31), b"51"),
    (Account(limit=9_999), 10_000, dt.date(2030, 12, 31), b"61"),
    (Account(blocked=True), 10_000, dt.date(2030, 12, 31), b"62"),
    (Account(), 10_000, dt.date(2025, 12, 31), b"54"),
    (Account(balance=10_000), 10_000, dt.date(2030, 12, 31), b"00"),
])
def test_account_rules(account: Account, amount: int, expiry: dt.date, arc: bytes) -> None:
    host = SimulatedIssuer(IMK, accounts={PAN: account})
    answer = host.authorize(request(amount=amount, expiry=expiry))
    assert answer.arc == arc, answer.reason
    if arc == b"00":
        assert host.accounts[PAN].balance == 0
        assert host.authorize(request(atc=8, amount=1)).arc == b"51"


def test_unknown_cards() -> None:
    assert SimulatedIssuer(IMK, known_cards_only=True).authorize(request()).arc == b"14"
    host = SimulatedIssuer(IMK)
    assert host.authorize(request()).approved and PAN in host.accounts


def test_a_request_the_host_cannot_check_is_declined() -> None:
    other = AuthorizationRequest(pan=PAN, psn=PSN, atc=1, arqc=bytes(8), values={}, iad=IAD,
                                 amount=1, when=WHEN, aid=AID)
    answer = SimulatedIssuer(IMK).authorize(other)
    assert answer.arc == b"05" and not answer.arpc and "cannot be checked" in answer.reason
    unknown_aid = AuthorizationRequest(pan=PAN, psn=PSN, atc=1, arqc=bytes(8),
                                       values=values(1), iad=IAD, amount=1, when=WHEN,
                                       aid=bytes.fromhex("A000000333010199"))
    answer = SimulatedIssuer.from_keystore(KEYS).authorize(unknown_aid)
    assert answer.arc == b"05" and "no EMV keys" in answer.reason


def test_a_blocked_pin_in_the_tvr_is_declined_75() -> None:
    from pyemv.ac import generate_ac

    covered = {**values(7), 0x95: bytes.fromhex("0000A08000")}
    arqc = quiet(generate_ac, pyemv_session_key(7), b"".join(covered.values()) + CVR)
    asked = AuthorizationRequest(pan=PAN, psn=PSN, atc=7, arqc=arqc, values=covered, iad=IAD,
                                 amount=10_000, when=WHEN, aid=AID)
    answer = SimulatedIssuer(IMK).authorize(asked)
    assert answer.arc == b"75" and "PIN" in answer.reason


def test_a_replayed_arqc_is_declined() -> None:
    host = SimulatedIssuer(IMK)
    assert host.authorize(request(atc=9)).approved
    again = host.authorize(request(atc=9))
    assert again.arc == b"05" and "replayed" in again.reason
    assert host.authorize(request(atc=8)).arc == b"05"
    assert host.authorize(request(atc=10)).approved


def test_an_amount_other_than_the_one_the_arqc_covers_is_declined_05() -> None:
    genuine = request(amount=10_000)
    cheaper = AuthorizationRequest(pan=PAN, psn=PSN, atc=7, arqc=genuine.arqc,
                                   values=genuine.values, iad=IAD, amount=100, when=WHEN,
                                   aid=AID)
    host = SimulatedIssuer(IMK, accounts={PAN: Account(balance=20_000)})
    answer = host.authorize(cheaper)
    assert answer.arc == b"05" and "amount" in answer.reason
    assert host.accounts[PAN].balance == 20_000  # nothing debited
    assert host.authorize(genuine).approved and host.accounts[PAN].balance == 10_000
