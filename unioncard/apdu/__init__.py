"""The APDU layer: command/response APDUs, status words, BER-TLV, DOLs, the tag
dictionary, trace files and the fast bulk indexer (ISO 7816-4, EMV Book 3)."""

from unioncard.apdu import dol, tags, tlv
from unioncard.apdu.apdu import CommandAPDU, ResponseAPDU
from unioncard.apdu.instructions import INS, command_name
from unioncard.apdu.status import SW, describe
from unioncard.errors import DecodeError

__all__ = [
    "INS",
    "SW",
    "CommandAPDU",
    "DecodeError",
    "ResponseAPDU",
    "command_name",
    "describe",
    "dol",
    "tags",
    "tlv",
]
