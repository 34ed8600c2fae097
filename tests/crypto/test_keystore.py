"""The keystore file format and the shipped test keystore."""

import pytest

from unioncard.crypto import Keystore, PurseKeys, derive_card_keys, diversify
from unioncard.errors import CryptoError

PROTOCOL_KEYS = {
    "transit": (0x01, "404142434445464748494A4B4C4D4E4F", "505152535455565758595A5B5C5D5E5F",
                "606162636465666768696A6B6C6D6E6F", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"),
    "etc": (0x02, "707172737475767778797A7B7C7D7E7F", "808182838485868788898A8B8C8D8E8F",
            "909192939495969798999A9B9C9D9E9F", "B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF"),
}


def test_shipped_keystore_holds_the_protocol_test_keys():
    ks = Keystore.test()
    assert ks.test_keys is True
    for app, (version, mpk, mlk, mtk, mmk) in PROTOCOL_KEYS.items():
        keys = ks.purse_keys(app)
        assert keys.key_version == version
        got = (keys.purchase_mk, keys.load_mk, keys.tac_mk, keys.maintenance_mk)
        assert tuple(k.hex().upper() for k in got) == (mpk, mlk, mtk, mmk)
        assert ks.by_version(version) is keys
    assert ks.purchase_master_keys() == {
        1: bytes.fromhex(PROTOCOL_KEYS["transit"][1]), 2: bytes.fromhex(PROTOCOL_KEYS["etc"][1])}


def test_round_trip_through_toml():
    ks = Keystore.test()
    assert Keystore.from_toml(ks.to_toml()) == ks


def test_keys_never_in_repr():
    text = repr(Keystore.test()) + repr(derive_card_keys(Keystore.test().purse[0], bytes(8)))
    for _, mpk, mlk, mtk, mmk in PROTOCOL_KEYS.values():
        for key in (mpk, mlk, mtk, mmk):
            assert key.lower() not in text.lower()
            assert str(bytes.fromhex(key)) not in text


def test_card_keys_are_diversified():
    keys = Keystore.test().purse_keys("etc")
    f = bytes.fromhex("1101000000000042")
    card = derive_card_keys(keys, f)
    assert card.key_version == 2
    assert card.purchase == diversify(keys.purchase_mk, f)
    assert card.load == diversify(keys.load_mk, f)
    assert card.tac == diversify(keys.tac_mk, f)
    assert card.maintenance == diversify(keys.maintenance_mk, f)


def test_load_from_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(Keystore.test().to_toml())
    assert Keystore.load(path) == Keystore.test()
    with pytest.raises(CryptoError, match=r"missing\.toml: cannot read the keystore"):
        Keystore.load(tmp_path / "missing.toml")


def test_reserved_sections_are_kept():
    text = Keystore.test().to_toml() + '\n[emv]\nnote = "later"\n'
    assert Keystore.from_toml(text).reserved == {"emv": {"note": "later"}}


def test_highest_version_wins_and_lookup_by_version():
    base = Keystore.test()
    newer = PurseKeys("transit", 0x11, *(bytes([i]) * 16 for i in range(4)))
    ks = Keystore((*base.purse, newer))
    assert ks.purse_keys("transit").key_version == 0x11
    assert ks.purse_keys("transit", 0x01).key_version == 0x01
    assert ks.applications == ("transit", "etc")


GOOD = Keystore.test().to_toml()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("format = 1", "not a keystore"),
        (GOOD.replace("version = 1", "version = 9"), "unsupported keystore version"),
        (GOOD.replace("test_keys = true", 'test_keys = "yes"'), "test_keys"),
        (GOOD + "\n[other]\nx = 1\n", "unknown keystore entries"),
        (GOOD.replace("key_version = 0x02", "key_version = 0x01"), "used by both"),
        (GOOD.replace("404142434445464748494A4B4C4D4E4F", "4041"), "16 bytes"),
        (GOOD.replace("404142434445464748494A4B4C4D4E4F", "zz" * 16), "not a hex string"),
        (GOOD.replace('application = "etc"', 'application = "ETC!"'), "must match"),
        (GOOD.replace("key_version = 0x02", "key_version = 0x200"), "0..255"),
        (GOOD.replace('tac_mk = "6061', 'tac = "6061'), "unknown entries"),
        ("format = = 1", "not valid TOML"),
    ],
)
def test_malformed_keystores_are_refused(text, message):
    with pytest.raises(CryptoError, match=message):
        Keystore.from_toml(text)


def test_missing_application_and_version():
    ks = Keystore.test()
    with pytest.raises(CryptoError, match="no keys for application 'metro'"):
        ks.purse_keys("metro")
    with pytest.raises(CryptoError, match="no key version 07"):
        ks.by_version(7)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('format = "unioncard-keystore"\nversion = 1\ndescription = "市总工会"\n'.encode("gbk"),
         r"keys.toml: the keystore is not UTF-8 text \(byte 0xCA at offset 57\)"),
        (bytes(range(256)), "keys.toml: the keystore is not UTF-8 text"),
        (b"x = " + b"[" * 10_000 + b"]" * 10_000, "keys.toml: .*nested too deeply"),
    ],
)
def test_hostile_keystore_files(tmp_path, raw, message):
    path = tmp_path / "keys.toml"
    path.write_bytes(raw)
    with pytest.raises(CryptoError, match=message):
        Keystore.load(path)


def test_keystore_files_are_bounded_and_regular(tmp_path):
    from unioncard.bounded_read import KEYSTORE_LIMIT

    huge = tmp_path / "huge.toml"
    with huge.open("wb") as file:
        file.truncate(KEYSTORE_LIMIT + 1)
    with pytest.raises(CryptoError, match=r"huge\.toml: the keystore is larger than 1 MiB"):
        Keystore.load(huge)
    with pytest.raises(CryptoError, match="/dev/zero: the keystore is a character device"):
        Keystore.load("/dev/zero")


# --- keys per issuer ------------------------------------------------------------------------

CITY_B = bytes.fromhex("20000000FFFFFFFF")


def _entry(application: str, version: int, fill: str, issuer: bytes | None = None) -> str:
    lines = ["", "[[purse]]", f'application = "{application}"', f"key_version = {version}"]
    if issuer is not None:
        lines.append(f'issuer = "{issuer.hex().upper()}"')
    lines += [f'{name} = "{fill * 16}"'
              for name in ("purchase_mk", "load_mk", "tac_mk", "maintenance_mk")]
    return "\n".join(lines) + "\n"


def _with(*entries: str) -> Keystore:
    return Keystore.from_toml(Keystore.test().to_toml() + "".join(entries))


def test_an_issuers_own_entry_wins_and_others_fall_back_to_the_generic_one():
    keys = _with(_entry("transit", 1, "22", CITY_B))
    generic = keys.for_card(bytes.fromhex("10000000FFFFFFFF"), 1)
    assert generic.issuer is None and generic.tac_mk == Keystore.test().by_version(1).tac_mk
    assert keys.for_card(CITY_B, 1).tac_mk == bytes.fromhex("22" * 16)
    assert keys.for_card(CITY_B, 2).application == "etc"  # the generic ETC keys
    with pytest.raises(CryptoError, match="no key version 07 for issuer 20000000FFFFFFFF"):
        keys.for_card(CITY_B, 7)
    assert keys.by_version(1).issuer is None  # a PSAM's choice is unchanged


def test_key_versions_are_unique_per_issuer():
    with pytest.raises(CryptoError, match="key version 05 of issuer 20000000FFFFFFFF is used "
                                          "by both transit and etc"):
        _with(_entry("transit", 5, "22", CITY_B), _entry("etc", 5, "33", CITY_B))
    with pytest.raises(CryptoError, match="key version 01 is used by both transit and etc"):
        _with(_entry("etc", 1, "33"))
    assert len(_with(_entry("transit", 5, "22", CITY_B),
                     _entry("transit", 5, "33", bytes(8))).purse) == 4


def test_an_issuer_only_version_and_the_round_trip():
    keys = _with(_entry("transit", 9, "22", CITY_B))
    assert keys.by_version(9).issuer == CITY_B
    assert keys.purchase_master_keys()[9] == bytes.fromhex("22" * 16)
    assert Keystore.from_toml(keys.to_toml()) == keys
    two = _with(_entry("transit", 9, "22", CITY_B), _entry("transit", 9, "33", bytes(8)))
    with pytest.raises(CryptoError, match="belongs to 2 issuers"):
        two.by_version(9)


@pytest.mark.parametrize("issuer", ['"2000"', '"ZZ000000FFFFFFFF"', "12"])
def test_a_bad_issuer_is_refused(issuer):
    text = _entry("transit", 9, "22", CITY_B).replace('"20000000FFFFFFFF"', issuer)
    with pytest.raises(CryptoError, match=r"\(transit\) issuer: the issuer id"):
        Keystore.from_toml(Keystore.test().to_toml() + text)


# --- [emv] and [rsa] --------------------------------------------------------------------

DEBIT = bytes.fromhex("A000000333010101")


def test_shipped_emv_and_rsa_test_keys():
    from datetime import date
    from pathlib import Path

    from unioncard.crypto import oda

    ks = Keystore.test()
    emv = ks.emv_issuer_keys(DEBIT)
    assert (emv.dki, emv.ac_mk.hex().upper()) == (1, "C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF")
    assert ks.emv_issuer_keys(DEBIT, 1) is emv
    issuer = ks.issuer_rsa("6230123456789012345")
    ca = ks.ca_rsa(issuer.rid, issuer.ca_index)
    shipped = oda.load_capk_file(Path(oda.__file__).parent.parent / "data" / "capk-test.json")
    assert ca.capk in shipped
    cert, rem = oda.issuer_certificate(ca.private, issuer.private.public, issuer.issuer_id,
                                       issuer.expiry, issuer.serial)
    assert oda.recover_issuer_key(ca.capk, cert, rem, issuer.private.public.exponent,
                                  "6230123456789012345", today=date(2026, 12, 2)) == (
        issuer.private.public)
    assert len(ks.rsa_icc) == 4
    a, b = ks.icc_rsa_key(b"623012345678901234500"), ks.icc_rsa_key(b"623012345678901234500")
    assert a.public == b.public
    assert len({ks.icc_rsa_key(str(n).encode()).public for n in range(40)}) == 4


def test_emv_and_rsa_errors():
    ks = Keystore.test()
    with pytest.raises(CryptoError, match="no EMV keys for A000000333010102"):
        ks.emv_issuer_keys(bytes.fromhex("A000000333010102"))
    with pytest.raises(CryptoError, match="no issuer RSA key"):
        ks.issuer_rsa("4111111111111111")
    with pytest.raises(CryptoError, match="no CA key A000000333 08"):
        ks.ca_rsa(bytes.fromhex("A000000333"), 8)
    base = ks.to_toml()
    bad = [
        (base + '\n[[emv.issuer]]\naid = "A000000333010101"\ndki = 1\nac_mk = "00"\n'
         'smi_mk = "00"\nsmc_mk = "00"\n', "ac_mk"),
        (base + '\n[[emv.issuer]]\naid = "A000000333010101"\ndki = 1\n' + "".join(
            f'{n} = "{"11" * 16}"\n' for n in ("ac_mk", "smi_mk", "smc_mk")), "listed twice"),
        (base + '\n[[rsa.icc]]\nprivate_key = "junk"\n', r"\[\[rsa.icc\]\] #5"),
        (base + '\n[[rsa.ca]]\nrid = "A000000333"\nindex = 0xF1\n', "missing"),
        (base.replace('issuer_id = "623012"', 'issuer_id = "62"'), "issuer identifier"),
        (base.replace("ca_index = 0xF1", "ca_index = 0xF2"), "no CA key A000000333 F2"),
    ]
    for text, message in bad:
        with pytest.raises(CryptoError, match=message):
            Keystore.from_toml(text)


def test_keystores_without_emv_or_rsa_stay_valid():
    old = Keystore(Keystore.test().purse, True, "purse only")
    again = Keystore.from_toml(old.to_toml())
    assert again == old and again.emv == () and again.rsa_ca == ()
