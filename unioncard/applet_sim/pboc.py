"""The PBOC debit application with electronic cash and qPBOC (JR/T 0025 PBOC 2.0/3.0;
EMV 4.3 Books 2-3; docs/pboc.md has every byte and every CVR bit).

Commands, once the ADF is selected: GET PROCESSING OPTIONS (contact: AIP and AFL in
format 1; qPBOC when the TTQ asks for it: the whole transaction in the format 2 answer),
READ RECORD (the AFL's records, with or without GPO), GET DATA, VERIFY (offline
plaintext PIN, P2 ``80``), INTERNAL AUTHENTICATE (DDA), GENERATE AC first and second
(CDA when P1 asks), EXTERNAL AUTHENTICATE (issuer authentication with the ARPC), and
PUT DATA with a MAC (``04 DA``: the EC balance and limits, an issuer script).

Persistent state, NVM cells under ``<ADF path>:``: ``atc`` (2), ``last_online_atc`` (2),
``pin_tries`` (1), ``state`` (1: `Flags`), ``ec_balance`` (6, n12), ``ec_limits`` (18:
balance limit, single-transaction limit, reset threshold, n12 each) and the AFL's records
``rec.<SFI>.<n>``.  The transaction log is the cyclic EF of SFI ``0B``.  An EC purchase
writes the EC balance, the log record and its pointer in one NVM transaction with the
TC it answers: a power cut leaves all of them or none.  The transaction in progress
(GPO to second GENERATE AC) is volatile: `Ram.apps`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from unioncard.apdu import SW, CommandAPDU, dol
from unioncard.apdu.tlv import Tlv, decode, encode_length
from unioncard.applet_sim.base import Application, CardServices, Reply, application_label, sw
from unioncard.applet_sim.files import Node, append_cyclic, read_record, record_count
from unioncard.applet_sim.nvm import Step
from unioncard.crypto import emv, oda
from unioncard.errors import CryptoError, DecodeError

__all__ = [
    "AFL_ENTRIES",
    "AIP",
    "CDOL1",
    "CDOL2",
    "DDOL",
    "DEBIT_AID",
    "EC_AUTH_CODE",
    "ICC_KEY_BITS",
    "LOG_FORMAT",
    "LOG_RECORD_SIZE",
    "LOG_SFI",
    "PDOL",
    "Decision",
    "Flags",
    "PbocApplication",
    "PbocConfig",
    "afl_problem",
    "bcd_amount",
    "check_icc_key",
    "luhn_digit",
]

DEBIT_AID = bytes.fromhex("A000000333010101")
PDOL = bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C019F3704DF60019F7A01")
"""The typical UnionPay qPBOC PDOL (docs/protocol.md §5) and the EC terminal support
indicator ``9F7A`` of the contact EC profile (JR/T 0025.13): one PDOL for both
interfaces, the simulated card answering the same FCI on both."""
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F37049F21039F4E14")
CDOL2 = bytes.fromhex("8A02910A95059F3704")
"""ARC, issuer authentication data (ARPC ‖ ARC), TVR, unpredictable number."""
DDOL = bytes.fromhex("9F3704")
LOG_FORMAT = bytes.fromhex("9A039F21039F02069F03069F1A025F2A029F4E149C019F3602")
LOG_SFI = 0x0B
LOG_RECORDS = 10
AFL_ENTRIES = 63
RECORD_SIZE = 254
"""The longest record of an AEF, tag and length included (EMV Book 3, files)."""
ICC_KEY_BITS = (512, 1984)
AIP = bytes.fromhex("7D00")
"""SDA, DDA, cardholder verification, terminal risk management, issuer authentication, CDA."""
EC_AUTH_CODE = b"ECC001"
"""``9F74``: present in an answer = the card approved an electronic cash purchase offline."""
CTQ = bytes.fromhex("2000")
"""``9F6C``: go online if offline data authentication fails and the reader can."""
DKI_CVN = 0x01  # cryptogram version number: PBOC CVN 01
ALG_DES = 0x01

_PDOL = dol.parse(PDOL)
_CDOL1 = dol.parse(CDOL1)
_CDOL2 = dol.parse(CDOL2)
_LOG = dol.parse(LOG_FORMAT)
LOG_RECORD_SIZE = sum(e.length for e in _LOG)
_PDOL_SIZE = sum(e.length for e in _PDOL)
_CDOL1_SIZE = sum(e.length for e in _CDOL1)
_CDOL2_SIZE = sum(e.length for e in _CDOL2)
_APPROVED_ARC = {b"00", b"10", b"11"}
_UNABLE_ONLINE = {b"Y3", b"Z3"}
_EC_TAGS = {0x9F79: 0, 0x9F77: 1, 0x9F78: 2, 0x9F6D: 3}


class Decision(enum.IntEnum):
    """Cryptogram types as P1 and the CID carry them (bits 8-7)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


class Flags(enum.IntFlag):
    """The ``state`` cell: what the next transactions must know about this one."""

    NONE = 0x00
    ONLINE_PENDING = 0x01  # an ARQC was given and no second GENERATE AC followed
    ISSUER_AUTH_FAILED = 0x02  # issuer authentication failed on the last online transaction
    BLOCKED = 0x04  # APPLICATION BLOCK: SELECT 6283, GPO 6985, GENERATE AC an AAC
    ALL = 0x07


def bcd_amount(value: int) -> bytes:
    """An amount in fen as n12 (6 bytes BCD).

    >>> bcd_amount(12345).hex()
    '000000012345'
    """
    if not 0 <= value < 10**12:
        raise ValueError("an n12 amount is 0..999999999999")
    return bytes.fromhex(f"{value:012d}")


def _amount(raw: bytes) -> int | None:
    text = raw.hex()
    return int(text) if text.isdigit() else None


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _digits(text: str, shortest: int, longest: int) -> bool:
    return text.isascii() and text.isdigit() and shortest <= len(text) <= longest


def afl_problem(afl: bytes) -> str | None:
    """Why ``afl`` cannot be this application's AFL (EMV Book 3 §10.2), or None: entries
    of 4 bytes (SFI 1..30 in bits 8-4, first and last record, records for ODA), at most
    63 of them (a format 1 GPO answer's length is one byte), each record named once, not
    the transaction log's SFI (the card OS reads that file), and record 1 of SFI 1
    among them (the qPBOC answer takes track 2 from it).

    >>> afl_problem(bytes.fromhex("0801020210010300")) is None
    True
    >>> afl_problem(bytes.fromhex("0801020008020300"))
    'names record 2 of SFI 01 twice'
    """
    if not afl or len(afl) % 4 or len(afl) > 4 * AFL_ENTRIES:
        return f"must be 1 to {AFL_ENTRIES} entries of 4 bytes"
    seen: set[tuple[int, int]] = set()
    for i in range(0, len(afl), 4):
        sfi, first, last, oda_count = afl[i] >> 3, *afl[i + 1:i + 4]
        if afl[i] & 0x07 or not 1 <= sfi <= 30 or not 1 <= first <= last \
                or oda_count > last - first + 1:
            return f"entry {afl[i:i + 4].hex().upper()} is not valid"
        if sfi == LOG_SFI:
            return f"names SFI {LOG_SFI:02X}, the transaction log's"
        for n in range(first, last + 1):
            if (sfi, n) in seen:
                return f"names record {n} of SFI {sfi:02X} twice"
            seen.add((sfi, n))
    if (1, 1) not in seen:
        return "does not name record 1 of SFI 01 (track 2 of the qPBOC answer)"
    return None


def luhn_digit(digits: str) -> str:
    """The Luhn check digit of ``digits`` (ISO/IEC 7812-1)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def check_icc_key(pem: str) -> oda.PrivateKey:
    """The ICC private key of a PEM document: RSA, exponent 3 or 65537, a modulus of
    whole bytes, `ICC_KEY_BITS` long (EMV Book 2 §5.1, §6.1: at most 248 bytes; CDA's
    signed data needs 63).  ValueError saying why not."""
    try:
        key = oda.PrivateKey.from_pem(pem)
    except (CryptoError, ValueError):
        raise ValueError("the ICC key is not an unencrypted PEM RSA private key") from None
    numbers = key.key.public_key().public_numbers()
    low, high = ICC_KEY_BITS
    if numbers.n.bit_length() % 8 or not low <= numbers.n.bit_length() <= high:
        raise ValueError(f"the ICC key has {numbers.n.bit_length()} bits, not a multiple of "
                         f"8 from {low} to {high}")
    if numbers.e not in (3, 65537):
        raise ValueError(f"the ICC key's exponent is {numbers.e}, not 3 or 65537")
    return key


def _record_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not one record template ``70`` of at most `RECORD_SIZE` bytes.

    >>> _record_problem(bytes.fromhex("70035A0112")) is None, _record_problem(b"\\x70\\x05")
    (True, 'is not a BER-TLV record template 70')
    """
    if len(raw) > RECORD_SIZE:
        return f"has {len(raw)} bytes, more than {RECORD_SIZE}"
    try:
        nodes = decode(raw)
    except DecodeError:
        return "is not a BER-TLV record template 70"
    if len(nodes) != 1 or nodes[0].tag != 0x70 or nodes[0].to_bytes() != raw:
        return "is not one record template 70 alone"
    return None


def _tlv(tag: int, value: bytes) -> bytes:
    return Tlv.primitive(tag, value).to_bytes()


@dataclass(frozen=True, slots=True)
class PbocConfig:
    """What personalization fixed: keys, PIN, AFL and electronic cash defaults."""

    pan: str
    psn: str
    dki: int
    ac_key: bytes = field(repr=False)
    smi_key: bytes = field(repr=False)
    smc_key: bytes = field(repr=False)
    icc_key_pem: str = field(repr=False)
    pin: str = field(repr=False)
    afl: bytes = bytes.fromhex("0801020210010300")
    label: str = "PBOC DEBIT"
    priority: int = 1
    pin_max_tries: int = 3
    currency: bytes = bytes.fromhex("0156")
    log_fid: int = 0x000B
    qpboc_cid: bool = True
    """Whether the qPBOC GPO answer carries the CID ``9F27`` (optional in qPBOC: without it
    the reader takes the cryptogram type from the IAD's CVR)."""

    def __post_init__(self) -> None:
        if not _digits(self.pan, 12, 19):
            raise ValueError("a PAN has 12 to 19 digits")
        if not _digits(self.psn, 2, 2):
            raise ValueError("a PAN sequence number has 2 digits")
        for name in ("ac_key", "smi_key", "smc_key"):
            if len(getattr(self, name)) != 16:
                raise ValueError(f"the {name} is 16 bytes")
        if not _digits(self.pin, 4, 12):
            raise ValueError("a PIN has 4 to 12 digits")
        if not 1 <= self.pin_max_tries <= 15:
            raise ValueError("PIN tries must be 1..15")
        problem = afl_problem(self.afl)
        if problem:
            raise ValueError(f"the AFL {problem}")
        if not _digits(self.currency.hex(), 4, 4) or self.currency[0] >> 4:
            raise ValueError("a currency code is n3: 2 bytes of BCD digits, the first one 0")
        if not 0 <= self.dki <= 0xFF or not 0 <= self.priority <= 0xFF:
            raise ValueError("the DKI and the application priority are one byte each")
        if not 0 <= self.log_fid <= 0xFFFF:
            raise ValueError("the log EF's FID is 2 bytes")
        if not (self.label and len(self.label) <= 16 and self.label.isascii()
                and self.label.isprintable()):
            raise ValueError("an application label is 1 to 16 printable ASCII characters")
        check_icc_key(self.icc_key_pem)

    @property
    def type(self) -> str:
        return "pboc"

    @property
    def records(self) -> list[tuple[int, int]]:
        """Every (SFI, record number) the AFL names."""
        out = []
        for i in range(0, len(self.afl), 4):
            sfi, first, last = self.afl[i] >> 3, self.afl[i + 1], self.afl[i + 2]
            out += [(sfi, n) for n in range(first, last + 1)]
        return out

    def create(self, card: CardServices, node: Node) -> Application:
        return PbocApplication(card, node, self)

    def to_json(self) -> dict[str, Any]:
        return {"type": "pboc", "label": self.label, "priority": self.priority,
                "pan": self.pan, "psn": self.psn, "dki": self.dki,
                "keys": {"ac": self.ac_key.hex().upper(), "smi": self.smi_key.hex().upper(),
                         "smc": self.smc_key.hex().upper()},
                "icc_key": self.icc_key_pem, "pin": self.pin,
                "pin_max_tries": self.pin_max_tries, "afl": self.afl.hex().upper(),
                "currency": self.currency.hex().upper(), "log_fid": f"{self.log_fid:04X}",
                "qpboc_cid": self.qpboc_cid}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PbocConfig:
        keys = doc["keys"]
        return cls(str(doc["pan"]), str(doc["psn"]), int(doc["dki"]),
                   bytes.fromhex(keys["ac"]), bytes.fromhex(keys["smi"]),
                   bytes.fromhex(keys["smc"]), str(doc["icc_key"]), str(doc["pin"]),
                   bytes.fromhex(doc["afl"]), str(doc.get("label", "PBOC DEBIT")),
                   int(doc.get("priority", 1)), int(doc.get("pin_max_tries", 3)),
                   bytes.fromhex(doc.get("currency", "0156")), int(doc.get("log_fid", "000B"), 16),
                   _flag(doc.get("qpboc_cid", True), "qpboc_cid"))


@dataclass(slots=True)
class _Tx:
    """One transaction, from SELECT to the last command (RAM)."""

    gpo_done: bool = False
    qpboc: bool = False
    atc: int = 0
    pdol_values: bytes = b""
    cdol1_values: bytes = b""
    terminal: dict[int, bytes] = field(default_factory=dict)
    awaiting_second: bool = False
    finished: bool = False
    arqc: bytes | None = None
    issuer_auth: bool | None = None  # None: not performed
    pin_tried: bool = False
    pin_failed: bool = False
    dda_performed: bool = False
    scripts: int = 0
    script_failed: bool = False
    flags_before: Flags = Flags.NONE


class PbocApplication(Application):
    """PBOC debit with electronic cash (contact) and qPBOC (contactless)."""

    config: PbocConfig

    def __init__(self, card: CardServices, node: Node, config: PbocConfig) -> None:
        super().__init__(card, node, config)
        self._icc_key: oda.PrivateKey | None = None
        self._proprietary = {
            (0x80, 0xA8): self._gpo,
            (0x80, 0xAE): self._generate_ac,
            (0x80, 0xCA): self._get_data,
            (0x84, 0x1E): self._application_block,
        }
        self._interindustry = {
            0xB2: self._read_record,
            0x20: self._verify,
            0x88: self._internal_authenticate,
            0x82: self._external_authenticate,
            0xDA: self._put_data,
        }

    # --- NVM --------------------------------------------------------------------------

    def personalize(self, **values: Any) -> None:
        """Initial cells: ``records`` {(sfi, n): record}, ``ec_balance``, ``ec_balance_limit``,
        ``ec_single_limit``, ``ec_reset_threshold`` (fen)."""
        records: dict[tuple[int, int], bytes] = values["records"]
        if set(records) != set(self.config.records):
            raise ValueError("the records must be exactly those of the AFL")
        for (sfi, n), record in records.items():
            self.nvm.format(self._record_cell(sfi, n), record)
        limits = (int(values.get("ec_balance_limit", 100000)),
                  int(values.get("ec_single_limit", 50000)),
                  int(values.get("ec_reset_threshold", 10000)))
        balance = int(values.get("ec_balance", 0))
        if balance > limits[0]:
            raise ValueError("the EC balance may not exceed the EC balance limit")
        self.nvm.format(self.cell("atc"), bytes(2))
        self.nvm.format(self.cell("last_online_atc"), bytes(2))
        self.nvm.format(self.cell("pin_tries"), bytes([self.config.pin_max_tries]))
        self.nvm.format(self.cell("state"), bytes(1))
        self.nvm.format(self.cell("ec_balance"), bcd_amount(balance))
        self.nvm.format(self.cell("ec_limits"), b"".join(bcd_amount(v) for v in limits))

    def _record_cell(self, sfi: int, n: int) -> str:
        return self.cell(f"rec.{sfi:02X}.{n}")

    def _u(self, name: str) -> int:
        return int.from_bytes(self.nvm.read(self.cell(name)), "big")

    @property
    def atc(self) -> int:
        return self._u("atc")

    @property
    def last_online_atc(self) -> int:
        return self._u("last_online_atc")

    @property
    def pin_tries(self) -> int:
        return self._u("pin_tries")

    @property
    def flags(self) -> Flags:
        return Flags(self._u("state"))

    @property
    def ec_balance(self) -> int:
        return _amount(self.nvm.read(self.cell("ec_balance"))) or 0

    @property
    def ec_limits(self) -> tuple[int, int, int]:
        """EC balance limit (9F77), single-transaction limit (9F78), reset threshold (9F6D)."""
        raw = self.nvm.read(self.cell("ec_limits"))
        a, b, c = (_amount(raw[i:i + 6]) or 0 for i in (0, 6, 12))
        return a, b, c

    @property
    def log_file(self) -> Node:
        return self.card.fs.cyclic_child(self.node.path, self.config.log_fid)

    def log(self) -> list[dict[int, bytes]]:
        """The transaction log, newest first, each entry by tag (``9F4F``)."""
        node = self.log_file
        return [dol.split(_LOG, read_record(self.nvm, node, n) or bytes(LOG_RECORD_SIZE))
                for n in range(1, record_count(self.nvm, node) + 1)]

    def cell_checks(self) -> dict[str, Any]:
        """Each cell's check (docs/card-image.md): counters of 2 bytes, PIN tries at most
        the maximum, `Flags` bits only, EC amounts n12, and each record the AFL names one
        record template ``70`` (READ RECORD answers it as it is).  `image.check_card`
        also holds the EC balance within its limit and the last online ATC at most the
        ATC."""
        def sized(n: int) -> Any:
            return lambda raw: None if len(raw) == n else f"has {len(raw)} bytes, not {n}"

        def bcd(n: int) -> Any:
            def check(raw: bytes) -> str | None:
                if len(raw) != n or not raw.hex().isdigit():
                    return f"is not {n} bytes of BCD digits (n{2 * n})"
                return None
            return check

        def tries(raw: bytes) -> str | None:
            if len(raw) != 1:
                return f"has {len(raw)} bytes, not 1"
            if raw[0] > self.config.pin_max_tries:
                return f"holds {raw[0]}, above the PIN's tries {self.config.pin_max_tries}"
            return None

        def state(raw: bytes) -> str | None:
            if len(raw) != 1:
                return f"has {len(raw)} bytes, not 1"
            if raw[0] & ~int(Flags.ALL):
                return f"holds {raw[0]:02X}, a bit other than {Flags.ALL:02X}"
            return None

        checks: dict[str, Any] = {self.cell(n): sized(2) for n in ("atc", "last_online_atc")}
        checks[self.cell("pin_tries")] = tries
        checks[self.cell("state")] = state
        checks[self.cell("ec_balance")] = bcd(6)
        checks[self.cell("ec_limits")] = bcd(18)
        for sfi, n in self.config.records:
            checks[self._record_cell(sfi, n)] = _record_problem
        return checks

    @property
    def icc_key(self) -> oda.PrivateKey:
        if self._icc_key is None:
            self._icc_key = oda.PrivateKey.from_pem(self.config.icc_key_pem)
        return self._icc_key

    # --- hooks ---------------------------------------------------------------------------

    def _tx(self) -> _Tx:
        tx = self.card.ram.apps.get(self.node.path)
        if tx is None:
            tx = self.card.ram.apps[self.node.path] = _Tx()
        return tx

    def select_status(self) -> int:
        """``9000``; ``6283`` (with the FCI) once the issuer blocked the application."""
        self.card.ram.apps[self.node.path] = _Tx()  # a SELECT starts a new transaction
        return SW.SELECTED_FILE_INVALIDATED if self.flags & Flags.BLOCKED else SW.OK

    def fci_proprietary(self) -> bytes:
        """``50`` label, ``87`` priority, ``9F38`` PDOL, ``5F2D`` languages, ``9F11`` code
        table, ``9F12`` preferred name, ``BF0C`` with ``9F4D`` the log entry."""
        log_entry = _tlv(0x9F4D, bytes([LOG_SFI, LOG_RECORDS]))
        return (application_label(self.config.label)
                + _tlv(0x87, bytes([self.config.priority])) + _tlv(0x9F38, PDOL)
                + _tlv(0x5F2D, b"zhen") + _tlv(0x9F11, b"\x01")
                + _tlv(0x9F12, b"UnionPay Debit")
                + b"\xBF\x0C" + encode_length(len(log_entry)) + log_entry)

    def process(self, cmd: CommandAPDU) -> Reply | None:
        handler = self._proprietary.get((cmd.cla, cmd.ins))
        return None if handler is None else handler(cmd)

    def process_interindustry(self, cmd: CommandAPDU) -> Reply | None:
        handler = self._interindustry.get(cmd.ins)
        if handler is None or (cmd.cla == 0x04) != (cmd.ins == 0xDA):
            return None
        return handler(cmd)

    # --- READ RECORD, GET DATA -----------------------------------------------------------------

    def _read_record(self, cmd: CommandAPDU) -> Reply | None:
        sfi = cmd.p2 >> 3
        if cmd.p2 & 0x07 != 0x04 or sfi == 0 or sfi == LOG_SFI:
            return None  # the card OS reads the current EF, and the log file
        if cmd.p1 == 0:
            return sw(SW.WRONG_P1_P2)
        if not any(s == sfi for s, _ in self.config.records):
            return sw(SW.FILE_NOT_FOUND)
        if (sfi, cmd.p1) not in self.config.records:
            return sw(SW.RECORD_NOT_FOUND)
        return self.nvm.read(self._record_cell(sfi, cmd.p1)), SW.OK

    def _data_object(self, tag: int) -> bytes | None:
        limits = self.ec_limits
        values = {
            0x9F36: self.atc.to_bytes(2, "big"),
            0x9F13: self.last_online_atc.to_bytes(2, "big"),
            0x9F17: bytes([self.pin_tries]),
            0x9F79: bcd_amount(self.ec_balance),
            0x9F77: bcd_amount(limits[0]),
            0x9F78: bcd_amount(limits[1]),
            0x9F6D: bcd_amount(limits[2]),
            0x9F4F: LOG_FORMAT,
            0x9F51: self.config.currency,
        }
        return values.get(tag)

    def _get_data(self, cmd: CommandAPDU) -> Reply:
        value = self._data_object((cmd.p1 << 8) | cmd.p2)
        if value is None:
            return sw(SW.REFERENCED_DATA_NOT_FOUND)
        return _tlv((cmd.p1 << 8) | cmd.p2, value), SW.OK

    # --- VERIFY, INTERNAL AUTHENTICATE ---------------------------------------------------------

    def _verify(self, cmd: CommandAPDU) -> Reply | None:
        if cmd.p2 != 0x80:
            return None  # the card PIN of the card OS (P2 00)
        if cmd.p1:
            return sw(SW.WRONG_P1_P2)
        tries = self.pin_tries
        if not cmd.data:
            return sw(SW.AUTHENTICATION_METHOD_BLOCKED if tries == 0 else 0x63C0 | tries)
        if len(cmd.data) != 8:
            return sw(SW.WRONG_LENGTH)
        if tries == 0:
            return sw(SW.AUTHENTICATION_METHOD_BLOCKED)
        tx = self._tx()
        tx.pin_tried = True
        self.nvm.write(Step.EMV_PIN_TRIES, self.cell("pin_tries"), bytes([tries - 1]))
        self.nvm.commit()  # a try counts even when the power goes during the comparison
        if cmd.data == _pin_block(self.config.pin):
            self.nvm.write(Step.EMV_PIN_TRIES, self.cell("pin_tries"),
                           bytes([self.config.pin_max_tries]))
            tx.pin_failed = False
            return sw(SW.OK)
        tx.pin_failed = True
        return sw(0x63C0 | (tries - 1))

    def _internal_authenticate(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        if len(cmd.data) != 4:  # DDOL 9F37 04
            return sw(SW.WRONG_LENGTH)
        sdad = oda.sign_sdad(self.icc_key, self.card.random(8), cmd.data)
        self._tx().dda_performed = True
        return b"\x80" + encode_length(len(sdad)) + sdad, SW.OK

    # --- GET PROCESSING OPTIONS -----------------------------------------------------------------

    def _next_atc(self) -> int | None:
        atc = self.atc
        if atc == 0xFFFF:
            return None
        self.nvm.write(Step.EMV_ATC, self.cell("atc"), (atc + 1).to_bytes(2, "big"))
        return atc + 1

    def _gpo(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        tx = self._tx()
        if tx.gpo_done or self.flags & Flags.BLOCKED:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        try:
            nodes = decode(cmd.data)
        except DecodeError:
            return sw(SW.WRONG_DATA)
        if len(nodes) != 1 or nodes[0].tag != 0x83:
            return sw(SW.WRONG_DATA)
        if len(nodes[0].value) != _PDOL_SIZE:
            return sw(SW.WRONG_LENGTH)
        atc = self._next_atc()
        if atc is None:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        tx.gpo_done, tx.atc, tx.pdol_values = True, atc, nodes[0].value
        tx.terminal = dol.split(_PDOL, nodes[0].value)
        tx.flags_before = self.flags
        if tx.terminal[0x9F66][0] & 0x20:  # TTQ: qPBOC
            tx.qpboc = True
            return self._qpboc(tx)
        return b"\x80" + bytes([len(AIP) + len(self.config.afl)]) + AIP + self.config.afl, SW.OK

    def _ec_allows(self, tx: _Tx) -> bool:
        """Electronic cash can approve this amount offline (docs/pboc.md).  Contact: only
        in a transaction GPO made an EC one (the terminal's ``9F7A`` = 01, JR/T 0025.13),
        for the amount GPO was given; qPBOC: the TTQ decides (`_qpboc`)."""
        amount = _amount(tx.terminal.get(0x9F02, b""))
        if not tx.qpboc:
            at_gpo = dol.split(_PDOL, tx.pdol_values)
            if at_gpo[0x9F7A] != b"\x01" or at_gpo[0x9F02] != tx.terminal.get(0x9F02):
                return False
        return (amount is not None and 0 < amount <= self.ec_limits[1]
                and amount <= self.ec_balance
                and tx.terminal.get(0x5F2A) == self.config.currency
                and not tx.flags_before & (Flags.ONLINE_PENDING | Flags.ISSUER_AUTH_FAILED))

    def _qpboc(self, tx: _Tx) -> Reply:
        ttq = tx.terminal[0x9F66]
        online_required, offline_only = ttq[1] & 0x80, ttq[0] & 0x08
        if self._ec_allows(tx) and not online_required:
            decision = Decision.TC
        elif offline_only:
            decision = Decision.AAC
        else:
            decision = Decision.ARQC
        extra = b""
        if decision is Decision.TC:
            self._ec_debit(tx)
            card_auth = b"\x01" + self.card.random(4) + CTQ  # 9F69, fDDA version 01
            terminal_data = (tx.terminal[0x9F37] + tx.terminal[0x9F02] + tx.terminal[0x5F2A]
                             + card_auth)
            sdad = oda.sign_sdad(self.icc_key, tx.atc.to_bytes(2, "big"), terminal_data)
            extra = (_tlv(0x9F4B, sdad) + _tlv(0x9F69, card_auth)
                     + _tlv(0x9F74, EC_AUTH_CODE))
            tx.finished = True
        elif decision is Decision.ARQC:
            tx.finished = True  # the contactless online transaction completes at the host
        cvr = self._cvr(tx, first=decision, second=None)
        ac = self._cryptogram(tx, tx.terminal, cvr)
        if decision is Decision.ARQC:
            tx.arqc = ac
        record1 = decode(self.nvm.read(self._record_cell(1, 1)))[0]
        track2 = next((n.value for n in record1.children if n.tag == 0x57), b"")
        body = (_tlv(0x82, AIP) + _tlv(0x94, self.config.afl) + _tlv(0x57, track2)
                + _tlv(0x5F34, bytes.fromhex(self.config.psn)) + _tlv(0x9F10, self._iad(cvr))
                + _tlv(0x9F26, ac)
                + (_tlv(0x9F27, bytes([decision])) if self.config.qpboc_cid else b"")
                + _tlv(0x9F36, tx.atc.to_bytes(2, "big")) + _tlv(0x9F6C, CTQ)
                + _tlv(0x9F5D, bcd_amount(self.ec_balance)) + extra)
        return b"\x77" + encode_length(len(body)) + body, SW.OK

    # --- GENERATE AC -------------------------------------------------------------------------

    def _generate_ac(self, cmd: CommandAPDU) -> Reply:
        tx = self._tx()
        requested, cda = cmd.p1 & 0xC0, bool(cmd.p1 & 0x10)
        if requested == 0xC0 or cmd.p1 & 0x2F or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        if not tx.gpo_done or tx.qpboc or tx.finished:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        if tx.awaiting_second:
            return self._second_ac(tx, Decision(requested), cda, cmd.data)
        if len(cmd.data) != _CDOL1_SIZE:
            return sw(SW.WRONG_LENGTH)
        tx.cdol1_values = cmd.data
        tx.terminal.update(dol.split(_CDOL1, cmd.data))
        ec = False
        if requested == Decision.AAC or self.flags & Flags.BLOCKED:
            decision = Decision.AAC
        elif requested == Decision.TC and self._ec_allows(tx):
            decision, ec = Decision.TC, True
        else:
            decision = Decision.ARQC  # the debit application goes online for all but EC
        cvr = self._cvr(tx, first=decision, second=None)
        ac = self._cryptogram(tx, tx.terminal, cvr)
        if decision is Decision.ARQC:
            tx.awaiting_second, tx.arqc = True, ac
            self._set_flags(self.flags | Flags.ONLINE_PENDING)
        else:
            tx.finished = True
            if ec:
                self._ec_debit(tx)
        extra = _tlv(0x9F74, EC_AUTH_CODE) if ec else b""
        return self._ac_response(tx, decision, ac, cvr, extra, cda, tx.cdol1_values)

    def _second_ac(self, tx: _Tx, requested: Decision, cda: bool, data: bytes) -> Reply:
        if len(data) != _CDOL2_SIZE:
            return sw(SW.WRONG_LENGTH)
        values = dol.split(_CDOL2, data)
        arc, issuer_data = values[0x8A], values[0x91]
        if tx.issuer_auth is None and any(issuer_data):
            assert tx.arqc is not None
            tx.issuer_auth = emv.verify_arpc(self._session_key(tx), tx.arqc, issuer_data[8:],
                                             issuer_data[:8])
        unable = arc in _UNABLE_ONLINE
        if requested is Decision.AAC or (unable and arc == b"Z3") or self.flags & Flags.BLOCKED:
            decision = Decision.AAC
        elif unable:
            decision = Decision.TC if requested is Decision.TC else Decision.AAC
        elif tx.issuer_auth is False or arc not in _APPROVED_ARC:
            decision = Decision.AAC
        else:
            decision = Decision.TC if requested is Decision.TC else Decision.AAC
        tx.terminal = {**tx.terminal, 0x95: values[0x95], 0x9F37: values[0x9F37]}
        cvr = self._cvr(tx, first=Decision.ARQC, second=decision, arc=arc)
        ac = self._cryptogram(tx, tx.terminal, cvr)
        flags = self.flags & ~Flags.ONLINE_PENDING
        if tx.issuer_auth is False:
            flags |= Flags.ISSUER_AUTH_FAILED
        elif tx.issuer_auth:
            flags &= ~Flags.ISSUER_AUTH_FAILED
            self.nvm.write(Step.EMV_STATE, self.cell("last_online_atc"),
                           tx.atc.to_bytes(2, "big"))
        self._set_flags(flags)
        tx.awaiting_second, tx.finished = False, True
        if decision is Decision.TC:
            self._append_log(tx)
        return self._ac_response(tx, decision, ac, cvr, b"", cda,
                                 tx.cdol1_values + data)

    def _ac_response(self, tx: _Tx, decision: Decision, ac: bytes, cvr: bytes, extra: bytes,
                     cda: bool, dol_values: bytes) -> Reply:
        """Format 2: ``77`` with CID, ATC, AC (or, for CDA, the SDAD carrying it), IAD."""
        head = (_tlv(0x9F27, bytes([decision])) + _tlv(0x9F36, tx.atc.to_bytes(2, "big")))
        if cda and decision is not Decision.AAC and AIP[0] & 0x01:
            body = head + _tlv(0x9F10, self._iad(cvr)) + extra
            tx_hash = oda.cda_transaction_hash(tx.pdol_values, dol_values, body)
            sdad = oda.sign_cda(self.icc_key, self.card.random(8), int(decision), ac, tx_hash,
                                tx.terminal[0x9F37])
            body += _tlv(0x9F4B, sdad)
        else:
            body = head + _tlv(0x9F26, ac) + _tlv(0x9F10, self._iad(cvr)) + extra
        return b"\x77" + encode_length(len(body)) + body, SW.OK

    # --- EXTERNAL AUTHENTICATE, PUT DATA -------------------------------------------------------

    def _external_authenticate(self, cmd: CommandAPDU) -> Reply:
        tx = self._tx()
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        if len(cmd.data) != 10:
            return sw(SW.WRONG_LENGTH)
        if not tx.awaiting_second or tx.issuer_auth is not None or tx.arqc is None:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        tx.issuer_auth = emv.verify_arpc(self._session_key(tx), tx.arqc, cmd.data[8:],
                                         cmd.data[:8])
        return sw(SW.OK if tx.issuer_auth else 0x6300)

    def _put_data(self, cmd: CommandAPDU) -> Reply:
        """PUT DATA with a MAC (``04 DA``): the new value then the 4-byte MAC made with the
        SMI session key over CLA INS P1 P2 Lc ‖ ATC ‖ ARQC ‖ value (EMV Book 2 §9.2)."""
        tx = self._tx()
        tag = (cmd.p1 << 8) | cmd.p2
        if tag not in _EC_TAGS:
            return sw(SW.REFERENCED_DATA_NOT_FOUND)
        if len(cmd.data) != 10:
            return sw(SW.WRONG_LENGTH)
        refusal = self._script_refusal(tx, cmd)
        if refusal is not None:
            return refusal
        value = cmd.data[:6]
        amount = _amount(value)
        if amount is None:
            tx.script_failed = True
            return sw(SW.WRONG_DATA)
        if tag == 0x9F79:
            if amount > self.ec_limits[0]:
                tx.script_failed = True
                return sw(SW.WRONG_DATA)
            self.nvm.write(Step.EMV_EC_BALANCE, self.cell("ec_balance"), value)
        elif tag == 0x9F77 and amount < self.ec_balance:  # the balance stays within it
            tx.script_failed = True
            return sw(SW.WRONG_DATA)
        else:
            raw = bytearray(self.nvm.read(self.cell("ec_limits")))
            at = 6 * (_EC_TAGS[tag] - 1)
            raw[at:at + 6] = value
            self.nvm.write(Step.EMV_EC_LIMITS, self.cell("ec_limits"), bytes(raw))
        return sw(SW.OK)

    def _application_block(self, cmd: CommandAPDU) -> Reply:
        """APPLICATION BLOCK (EMV Book 3 §6.5.1), an issuer script command: ``84 1E 00 00``
        with the 4-byte MAC as its data.  From then on SELECT answers ``6283``, GPO
        ``6985`` and GENERATE AC an AAC (this transaction's second one included)."""
        tx = self._tx()
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        if len(cmd.data) != 4:
            return sw(SW.WRONG_LENGTH)
        refusal = self._script_refusal(tx, cmd)
        if refusal is not None:
            return refusal
        self._set_flags(self.flags | Flags.BLOCKED)
        return sw(SW.OK)

    def _script_refusal(self, tx: _Tx, cmd: CommandAPDU) -> Reply | None:
        """Why an issuer script command is refused, or None (it counts as processed).  Its
        data ends with a MAC made with the SMI session key over CLA INS P1 P2 Lc ‖ ATC ‖
        ARQC ‖ the data before the MAC (EMV Book 2 §9.2); only within an online
        transaction (after the ARQC)."""
        if tx.arqc is None:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        data, mac = cmd.data[:-4], cmd.data[-4:]
        header = bytes([cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)])
        key = emv.session_key(self.config.smi_key, tx.atc)
        if emv.command_mac(key, header, tx.atc, tx.arqc, data) != mac:
            tx.script_failed = True
            return sw(SW.SM_DATA_OBJECTS_INCORRECT)
        tx.scripts += 1
        return None

    # --- pieces --------------------------------------------------------------------------------

    def _session_key(self, tx: _Tx) -> bytes:
        return emv.session_key(self.config.ac_key, tx.atc)

    def _cryptogram(self, tx: _Tx, terminal: dict[int, bytes], cvr: bytes) -> bytes:
        values = {**terminal, 0x82: AIP, 0x9F36: tx.atc.to_bytes(2, "big")}
        return emv.application_cryptogram(self._session_key(tx), emv.ac_data(values, cvr))

    def _iad(self, cvr: bytes) -> bytes:
        """``9F10``: 07 DKI CVN CVR(4) algorithm, then the issuer discretionary data
        ``0A 01`` ‖ EC balance (n12) ‖ ``000000``."""
        return (bytes([0x07, self.config.dki, DKI_CVN]) + cvr + bytes([ALG_DES])
                + b"\x0A\x01" + bcd_amount(self.ec_balance) + bytes(3))

    def _cvr(self, tx: _Tx, *, first: Decision, second: Decision | None,
             arc: bytes = b"") -> bytes:
        """The card verification results (docs/pboc.md, "CVR")."""
        kind = {Decision.AAC: 0b00, Decision.TC: 0b01, Decision.ARQC: 0b10}
        b2 = (0b10 << 6 if second is None else kind[second] << 6) | kind[first] << 4
        if second is not None and tx.issuer_auth is False:
            b2 |= 0x08
        if tx.pin_tried:
            b2 |= 0x04
        if tx.pin_failed:
            b2 |= 0x02
        if arc in _UNABLE_ONLINE:
            b2 |= 0x01
        b3 = 0
        if tx.flags_before & Flags.ONLINE_PENDING:
            b3 |= 0x80
        if self.pin_tries == 0:
            b3 |= 0x40
        if self.last_online_atc == 0:
            b3 |= 0x10
        if tx.flags_before & Flags.ISSUER_AUTH_FAILED:
            b3 |= 0x08
        if second is not None and tx.issuer_auth is None and arc not in _UNABLE_ONLINE:
            b3 |= 0x04
        b4 = min(tx.scripts, 15) << 4
        if tx.script_failed:
            b4 |= 0x08
        if tx.dda_performed:
            b4 |= 0x02
        return bytes([0x03, b2, b3, b4])

    def _set_flags(self, flags: Flags) -> None:
        if flags != self.flags:
            self.nvm.write(Step.EMV_STATE, self.cell("state"), bytes([flags]))

    def _ec_debit(self, tx: _Tx) -> None:
        """The EC purchase: balance and log record, in the command's NVM transaction."""
        amount = _amount(tx.terminal[0x9F02]) or 0
        self.nvm.write(Step.EMV_EC_BALANCE, self.cell("ec_balance"),
                       bcd_amount(self.ec_balance - amount))
        self._append_log(tx)

    def _append_log(self, tx: _Tx) -> None:
        values = {**tx.terminal, 0x9F36: tx.atc.to_bytes(2, "big")}
        append_cyclic(self.nvm, self.log_file, dol.build(_LOG, values),
                      Step.EMV_LOG, Step.EMV_LOG_POINTER)


def _pin_block(pin: str) -> bytes:
    """The plaintext offline PIN block: ``2N`` then the digits, padded with F to 8 bytes.

    >>> _pin_block("1234").hex().upper()
    '241234FFFFFFFFFF'
    """
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))

