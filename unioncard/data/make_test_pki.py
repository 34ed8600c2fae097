"""Make the project's RSA test PKI once (docs/keystore.md, "[rsa]").

Prints the ``[rsa]`` section of test-keystore.toml, and writes capk-test.json with the
test CA public key.  The keys in the repository were made by this script; running it
again makes different keys (cryptography draws the primes), so run it only to replace
the whole test PKI::

    python -m unioncard.data.make_test_pki > rsa-section.toml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unioncard.crypto.oda import CaPublicKey, PrivateKey

RID = bytes.fromhex("A000000333")
CA_INDEX = 0xF1
CA_BITS, ISSUER_BITS, ICC_BITS, ICC_POOL = 1408, 1152, 1024, 4


def _pem(key: PrivateKey) -> str:
    return '"""\n' + key.to_pem() + '"""'


def main() -> int:
    ca, issuer = PrivateKey.generate(CA_BITS), PrivateKey.generate(ISSUER_BITS)
    capk = CaPublicKey(RID, CA_INDEX, ca.public.modulus, ca.public.exponent, "20351231")
    doc = {"about": "unioncard TEST CA public keys (never for production): "
                    "checksum_sha1 = SHA-1(RID || index || modulus || exponent)",
           "keys": [capk.to_json()]}
    out = Path(__file__).with_name("capk-test.json")
    out.write_text(json.dumps(doc, indent=1) + "\n", "utf-8")
    lines = ["[[rsa.ca]]", f'rid = "{RID.hex().upper()}"', f"index = 0x{CA_INDEX:02X}",
             f'expiry = "{capk.expiry}"', f"private_key = {_pem(ca)}", "",
             "[[rsa.issuer]]", f'rid = "{RID.hex().upper()}"', f"ca_index = 0x{CA_INDEX:02X}",
             'issuer_id = "623012"', 'expiry = "1235"', "serial = 0x000001",
             f"private_key = {_pem(issuer)}"]
    for _ in range(ICC_POOL):
        lines += ["", "[[rsa.icc]]", f"private_key = {_pem(PrivateKey.generate(ICC_BITS))}"]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
