"""RSA offline data authentication (EMV Book 2): CAPK files, certificate chains, SDA, DDA,
fDDA and CDA, each check made to fail once."""

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest

from unioncard.apdu.tlv import encode_length
from unioncard.crypto import oda
from unioncard.crypto.oda import OdaFailure, OdaReason, PrivateKey
from unioncard.errors import CryptoError

DATA = Path(__file__).resolve().parents[2] / "unioncard" / "data"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "capk-unionpay.json"
TODAY = date(2026, 12, 2)
PAN = "6230123456789012345"
STATIC = bytes.fromhex("5A0A6230123456789012345F5F24032912315F280201567C00")
RID = bytes.fromhex("A000000333")


@pytest.fixture(scope="module")
def pki():
    ca, issuer, icc = (PrivateKey.generate(bits) for bits in (1408, 1152, 1024))
    capk = oda.CaPublicKey(RID, 0x80, ca.public.modulus, ca.public.exponent, "20301231")
    icert, irem = oda.issuer_certificate(ca, issuer.public, "623012", "1230", 0x123456)
    ccert, crem = oda.icc_certificate(issuer, icc.public, PAN, "1229", 7, STATIC)
    return {"ca": ca, "issuer": issuer, "icc": icc, "capk": capk, "icert": icert,
            "irem": irem, "ccert": ccert, "crem": crem}


def flip(data: bytes, at: int = 40) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def issuer_key(p, **kw):
    args = {"certificate": p["icert"], "remainder": p["irem"],
            "exponent": p["issuer"].public.exponent, "pan": PAN, "today": TODAY} | kw
    return oda.recover_issuer_key(p["capk"], **args)


def icc_key(p, **kw):
    args = {"certificate": p["ccert"], "remainder": p["crem"],
            "exponent": p["icc"].public.exponent, "pan": PAN, "static": STATIC,
            "today": TODAY} | kw
    return oda.recover_icc_key(p["issuer"].public, **args)


def reason(call) -> OdaReason:
    with pytest.raises(OdaFailure) as info:
        call()
    return info.value.reason


# --- CAPK files ---------------------------------------------------------------------

def test_unionpay_capks_ship_with_verified_checksums():
    keys = oda.load_capk_file(DATA / "capk-unionpay.json")
    assert [(k.rid.hex().upper(), k.index) for k in keys] == [
        ("A000000333", i) for i in (0x08, 0x09, 0x0A, 0x0B)]
    assert all(k.expired(TODAY) and not k.expired(date(2024, 12, 31)) for k in keys)


@pytest.mark.skipif(not SHARED.exists(), reason="shared reference data absent")
def test_unionpay_capks_equal_the_reference_file():
    shipped = oda.load_capk_file(DATA / "capk-unionpay.json")
    assert shipped == oda.load_capk_file(SHARED)


def test_test_capks_load():
    keys = oda.load_capk_file(DATA / "capk-test.json")
    assert keys and all(not k.expired(TODAY) for k in keys)


def test_bad_checksum_names_the_key(tmp_path):
    doc = json.loads((DATA / "capk-unionpay.json").read_text())
    doc["keys"][1]["modulus"] = doc["keys"][1]["modulus"][:-2] + "00"
    path = tmp_path / "capk.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CryptoError, match=r"key A000000333 09: checksum mismatch"):
        oda.load_capk_file(path)


@pytest.mark.parametrize("text", ["", "[]", '{"keys": [1]}', '{"keys": [{"rid": "A0"}]}',
                                  '{"keys": [{"rid": "A000000333", "index": "0808"}]}'])
def test_malformed_capk_files(text):
    with pytest.raises(CryptoError):
        oda.parse_capk_json(text)


def test_checksum_definition():
    key = oda.load_capk_file(DATA / "capk-unionpay.json")[0]
    expected = hashlib.sha1(key.rid + bytes([key.index]) + key.modulus + key.exponent)
    assert key.checksum == expected.digest()
    assert oda.parse_capk_json(json.dumps({"keys": [key.to_json()]})) == (key,)


# --- RSA -------------------------------------------------------------------------------

def test_private_operation_inverts_the_public_one(pki):
    key = pki["icc"]
    block = b"\x6A" + bytes(range(1, key.public.size - 1)) + b"\xBC"
    signature = key.sign_raw(block)
    d = key.key.private_numbers().d
    assert signature == pow(int.from_bytes(block, "big"), d,
                            int.from_bytes(key.public.modulus, "big")).to_bytes(128, "big")
    assert key.public.apply(signature) == block
    assert PrivateKey.from_pem(key.to_pem()).public == key.public


# --- the chain -----------------------------------------------------------------------

def test_chain_with_remainders(pki):
    assert pki["irem"] and pki["crem"]  # both keys longer than their certificates hold
    assert issuer_key(pki) == pki["issuer"].public
    assert icc_key(pki) == pki["icc"].public


def test_chain_without_remainders():
    ca, issuer = PrivateKey.generate(1408), PrivateKey.generate(1024)
    capk = oda.CaPublicKey(RID, 1, ca.public.modulus, ca.public.exponent, "20301231")
    cert, rem = oda.issuer_certificate(ca, issuer.public, "62301234", "0127", 1)
    assert rem == b""
    key = oda.recover_issuer_key(capk, cert, b"", issuer.public.exponent, PAN, today=TODAY)
    assert key == issuer.public


def test_issuer_certificate_failures(pki):
    assert reason(lambda: issuer_key(pki, certificate=flip(pki["icert"]))) in (
        OdaReason.HEADER, OdaReason.FORMAT, OdaReason.HASH)
    assert reason(lambda: issuer_key(pki, certificate=pki["icert"][1:])) is OdaReason.LENGTH
    assert reason(lambda: issuer_key(pki, remainder=flip(pki["irem"], 0))) is OdaReason.HASH
    assert reason(lambda: issuer_key(pki, exponent=b"\x01\x00\x01")) is OdaReason.LENGTH
    assert reason(lambda: issuer_key(pki, pan="6231123456789012")) is OdaReason.ISSUER_ID
    assert reason(lambda: issuer_key(pki, today=date(2031, 1, 1))) is OdaReason.EXPIRED
    assert issuer_key(pki, today=date(2030, 12, 31)) == pki["issuer"].public
    # an ICC certificate where an issuer certificate is expected
    wrong = oda.icc_certificate(pki["ca"], pki["issuer"].public, PAN, "1229", 1, b"")[0]
    assert reason(lambda: issuer_key(pki, certificate=wrong)) is OdaReason.FORMAT


def test_icc_certificate_failures(pki):
    assert reason(lambda: icc_key(pki, static=STATIC + b"\x00")) is OdaReason.HASH
    assert reason(lambda: icc_key(pki, pan="6230123456789012340")) is OdaReason.PAN
    assert reason(lambda: icc_key(pki, today=date(2030, 1, 1))) is OdaReason.EXPIRED
    assert reason(lambda: icc_key(pki, certificate=flip(pki["ccert"], 5))) in (
        OdaReason.HEADER, OdaReason.FORMAT, OdaReason.HASH)
    assert reason(lambda: icc_key(pki, remainder=b"")) is OdaReason.DATA_MISSING


def test_sda(pki):
    ssad = oda.sign_ssad(pki["issuer"], b"\xDA\xC1", STATIC)
    assert oda.verify_ssad(issuer_key(pki), ssad, STATIC) == b"\xDA\xC1"
    assert reason(lambda: oda.verify_ssad(issuer_key(pki), ssad, STATIC[:-1])) is OdaReason.HASH
    assert reason(lambda: oda.verify_ssad(issuer_key(pki), flip(ssad), STATIC)) in (
        OdaReason.HEADER, OdaReason.FORMAT, OdaReason.HASH)


def test_dda_and_fdda(pki):
    icc = icc_key(pki)
    ddol_values = bytes.fromhex("11223344")
    sdad = oda.sign_sdad(pki["icc"], bytes.fromhex("0102030405060708"), ddol_values)
    assert oda.verify_sdad(icc, sdad, ddol_values) == bytes.fromhex("0102030405060708")
    assert reason(lambda: oda.verify_sdad(icc, sdad, bytes.fromhex("11223345"))) is (
        OdaReason.HASH)
    # fDDA: UN ‖ amount ‖ currency ‖ card authentication related data
    fdda = bytes.fromhex("11223344" "000000001000" "0156" "01A1B2C3D48000")
    sdad = oda.sign_sdad(pki["icc"], b"\x00\x07", fdda)
    assert oda.verify_sdad(icc, sdad, fdda) == b"\x00\x07"
    # a static signature is not a dynamic one
    ssad = oda.sign_ssad(pki["issuer"], b"\xDA\xC1", fdda)
    assert reason(lambda: oda.verify_sdad(pki["issuer"].public, ssad, fdda)) is OdaReason.FORMAT


def test_cda(pki):
    icc = icc_key(pki)
    un, ac = bytes.fromhex("CAFEBABE"), bytes.fromhex("1122334455667788")
    response = bytes.fromhex("9F2701809F360200019F2608") + ac
    tx_hash = oda.cda_transaction_hash(b"pdol", b"cdol1", response)
    sdad = oda.sign_cda(pki["icc"], b"\x12\x34", 0x80, ac, tx_hash, un)
    body = response + b"\x9F\x4B\x81" + bytes([len(sdad)]) + sdad
    full = b"\x77" + encode_length(len(body)) + body
    assert oda.response_without_sdad(full) == response
    result = oda.verify_cda(icc, sdad, un, 0x80, tx_hash)
    assert (result.dynamic_number, result.cid, result.cryptogram) == (b"\x12\x34", 0x80, ac)
    assert reason(lambda: oda.verify_cda(icc, sdad, un, 0x40, tx_hash)) is OdaReason.CID
    other = oda.cda_transaction_hash(b"pdol", b"cdol1", response, b"cdol2")
    assert reason(lambda: oda.verify_cda(icc, sdad, un, 0x80, other)) is (
        OdaReason.TRANSACTION_HASH)
    assert reason(lambda: oda.verify_cda(icc, sdad, b"\x00" * 4, 0x80, tx_hash)) is (
        OdaReason.HASH)


def test_static_data_rules():
    record = bytes.fromhex("7008" "5A0362301F" "820100")
    assert oda.static_data([(1, record)]) == record[2:]
    assert oda.static_data([(11, record)]) == record
    assert oda.static_data([(2, record)], b"\x82", {0x82: b"\x7C\x00"}) == record[2:] + b"\x7C\x00"
    for bad in ([(1, b"\x71\x00")], [(1, record + b"\x00")]):
        assert reason(lambda bad=bad: oda.static_data(bad)) is OdaReason.STATIC_DATA
    assert reason(lambda: oda.static_data([], b"\x9F\x36", {0x9F36: b"\x00\x01"})) is (
        OdaReason.STATIC_DATA)
