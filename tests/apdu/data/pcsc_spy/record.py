"""Record the pcsc-spy fixtures of this directory from a real pcscd.

Not a test: run by hand when the fixtures must be re-recorded.  It needs a
pcscd with the vpcd driver whose two slots listen on PORT and PORT+1 (see
docs/traces.md, "Recording a pcsc-spy log"), then:

    python tests/apdu/data/pcsc_spy/record.py PORT OUTDIR

Two tiny virtual cards speak the vpcd protocol (a 2-byte big-endian length,
then the payload; a 1-byte payload is a control code): slot 0 is a transit
card, slot 1 a PSAM.  The client calls libpcsclite through ctypes with the spy
library (libpcscspy.so) standing in for libpcsclite.so.1.  pyscard cannot be
the client here: it passes a NULL pioRecvPci to SCardTransmit, which the
pcsc-lite 1.9.9 spy library dereferences (segmentation fault).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CARD_ATR = bytes.fromhex("3B8A800145543A554E494F4E43413B")
PSAM_ATR = bytes.fromhex("3B6900005053414D2D54455354")
CARD = {
    "00A404000E325041592E5359532E444446303100":
        "6F2C840E325041592E5359532E4444463031A51ABF0C1761154F08A000000632010105"
        "500854204D454D4245528701019000",
    "00A4040008A00000063201010500":
        "6F1E8408A000000632010105A512500854552D554E494F4E9F0801029F4E01009000",
    "00B095001E": "0201000000000000020100001234567890123456202401012029123155019000",
    "805C000204": "000007D09000",
    "805001020B0100000064000000001234": "000007D0000500000001011122334490 00",
    "00B2010C00": "6A83",
}
PSAM = {
    "00B0960006": "0000000012349000",
    "807000001C11223344000500000064062024010112000001010000123456789012": "6108",
    "00C0000008": "000000019A8B7C6D9000",
}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _card(port: int, atr: bytes, script: dict[str, str]) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            (n,) = struct.unpack(">H", _recv_exact(sock, 2))
            payload = _recv_exact(sock, n)
        except (EOFError, OSError):
            return
        if len(payload) == 1:
            if payload[0] == 0x04:
                sock.sendall(struct.pack(">H", len(atr)) + atr)
            continue
        answer = bytes.fromhex(script.get(payload.hex().upper(), "6D00").replace(" ", ""))
        sock.sendall(struct.pack(">H", len(answer)) + answer)


CLIENT = r'''
import ctypes as C
lib = C.CDLL("libpcsclite.so.1")
class IO(C.Structure):
    _fields_ = [("dwProtocol", C.c_ulong), ("cbPciLength", C.c_ulong)]
ctx = C.c_long()
assert lib.SCardEstablishContext(2, None, None, C.byref(ctx)) == 0
def connect(reader):
    card, proto = C.c_long(), C.c_ulong()
    rv = lib.SCardConnect(ctx, reader, 2, 3, C.byref(card), C.byref(proto))
    assert rv == 0, hex(rv)
    return card, proto.value
def transmit(handle, hex_command, room=258):
    card, proto = handle
    cmd = bytes.fromhex(hex_command)
    recv, n = (C.c_ubyte * 258)(), C.c_ulong(room)
    lib.SCardTransmit(card, C.byref(IO(proto, 16)), cmd, len(cmd), C.byref(IO(proto, 16)),
                      recv, C.byref(n))
card = connect(b"Virtual PCD 00 00")
psam = connect(b"Virtual PCD 00 01")
transmit(psam, "00B0960006")
transmit(card, "00A404000E325041592E5359532E444446303100")
transmit(card, "00A404000E325041592E5359532E444446303100", room=2)  # too small: fails
transmit(card, "00A4040008A00000063201010500")
transmit(card, "00B095001E")
transmit(card, "805C000204")
transmit(card, "805001020B0100000064000000001234")
transmit(psam, "807000001C11223344000500000064062024010112000001010000123456789012")
transmit(psam, "00C0000008")
transmit(card, "00B2010C00")
for handle in (card, psam):
    lib.SCardDisconnect(handle[0], 0)
lib.SCardReleaseContext(ctx)
'''


def main() -> None:
    port, outdir = int(sys.argv[1]), Path(sys.argv[2])
    for port_, atr, script in ((port, CARD_ATR, CARD), (port + 1, PSAM_ATR, PSAM)):
        threading.Thread(target=_card, args=(port_, atr, script), daemon=True).start()
    time.sleep(2.0)  # pcscd polls the vpcd slots: let both cards be seen as inserted
    with tempfile.TemporaryDirectory() as home:
        lib = Path(home, "lib")
        lib.mkdir()
        os.symlink("/usr/lib/x86_64-linux-gnu/libpcscspy.so.0", lib / "libpcsclite.so.1")
        os.symlink("/usr/lib/x86_64-linux-gnu/libpcsclite.so.1", lib / "libpcsclite_nospy.so.1")
        Path(home, "pcsc-spy").touch()  # the spy library appends to $HOME/pcsc-spy
        env = {**os.environ, "HOME": home, "LD_LIBRARY_PATH": str(lib)}
        subprocess.run([sys.executable, "-c", CLIENT], env=env, check=True)
        raw = Path(home, "pcsc-spy").read_bytes()
    (outdir / "spy_raw.log").write_bytes(raw)
    for name, flags in (("spy_display.txt", ["-n"]), ("spy_display_color.txt", [])):
        shown = subprocess.run(["pcsc-spy", *flags, str(outdir / "spy_raw.log")],
                               capture_output=True, check=True)
        (outdir / name).write_bytes(shown.stdout)


if __name__ == "__main__":
    main()
