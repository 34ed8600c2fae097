"""A card's static layout (file tree, applications, PIN, ATR bytes) and its image form.

The layout is fixed at personalization; everything a command can change lives
in NVM.  `layout_to_json` / `layout_from_json` give the layout part of a card
image (docs/card-image.md); malformed documents raise `DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unioncard.applet_sim.directory import DirectoryConfig
from unioncard.applet_sim.files import DF, EF, Access, AppConfig, FileKind, Node
from unioncard.applet_sim.member import MemberConfig
from unioncard.applet_sim.pboc import PbocConfig
from unioncard.applet_sim.psam import PsamConfig
from unioncard.applet_sim.purse import PurseConfig
from unioncard.errors import DecodeError

if TYPE_CHECKING:
    from unioncard.applet_sim.base import Application, CardServices

__all__ = [
    "APP_CONFIGS",
    "IMAGE_FORMAT",
    "IMAGE_VERSION",
    "CardLayout",
    "Pin",
    "layout_from_json",
    "layout_to_json",
]

IMAGE_FORMAT = "unioncard-card-image"
IMAGE_VERSION = 1

APP_CONFIGS: dict[str, Any] = {
    "purse": PurseConfig,
    "psam": PsamConfig,
    "member": MemberConfig,
    "pboc": PbocConfig,
    "directory": DirectoryConfig,
}


@dataclass(frozen=True, slots=True)
class Pin:
    """The card's global PIN: 4..12 digits, sent by VERIFY in compressed BCD padded with F."""

    digits: str
    max_tries: int = 3

    def __post_init__(self) -> None:
        if not (self.digits.isascii() and self.digits.isdigit()) or not 4 <= len(self.digits) <= 12:
            raise ValueError("a PIN has 4 to 12 digits")
        if not 1 <= self.max_tries <= 15:
            raise ValueError("PIN tries must be 1..15")

    @property
    def bcd(self) -> bytes:
        digits = self.digits + ("F" if len(self.digits) % 2 else "")
        return bytes.fromhex(digits)

    def __repr__(self) -> str:
        return f"Pin(digits='***', max_tries={self.max_tries})"


@dataclass(frozen=True, slots=True)
class CardLayout:
    """What personalization fixed: the kind of card, its file tree, PIN and ATR bytes."""

    kind: str
    mf: DF
    pin: Pin | None = None
    historical: bytes = b"UNIONCARD"
    label: str = ""

    def __post_init__(self) -> None:
        if len(self.historical) > 15:
            raise ValueError("at most 15 historical bytes")

    def create_app(self, card: CardServices, node: Node) -> Application:
        config = node.df.app
        assert config is not None
        app: Application = config.create(card, node)  # type: ignore[attr-defined]
        return app


# --- JSON ------------------------------------------------------------------------------------


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else f"{value:0{width}X}"


def _file_to_json(spec: EF | DF) -> dict[str, Any]:
    if isinstance(spec, EF):
        return {
            "type": "ef", "fid": _hex(spec.fid, 4), "name": spec.name, "kind": str(spec.kind),
            "size": spec.size, "records": spec.records, "sfi": _hex(spec.sfi, 2),
            "read": str(spec.read), "update": str(spec.update), "capp": spec.capp,
        }
    app: AppConfig | None = spec.app
    return {
        "type": "df", "fid": _hex(spec.fid, 4), "name": spec.name,
        "aid": None if spec.aid is None else spec.aid.hex().upper(),
        "app": None if app is None else app.to_json(),
        "children": [_file_to_json(child) for child in spec.children],
    }


def _int16(value: Any) -> int | None:
    return None if value is None else int(value, 16)


def _file_from_json(doc: dict[str, Any]) -> EF | DF:
    if doc["type"] == "ef":
        sfi = _int16(doc.get("sfi"))
        return EF(int(doc["fid"], 16), FileKind(doc["kind"]), int(doc["size"]),
                  int(doc.get("records", 0)), sfi, Access(doc.get("read", "always")),
                  Access(doc.get("update", "never")), bool(doc.get("capp", False)),
                  str(doc.get("name", "")))
    if doc["type"] != "df":
        raise ValueError(f"unknown file type {doc['type']!r}")
    app = None
    if doc.get("app") is not None:
        config_type = APP_CONFIGS.get(doc["app"]["type"])
        if config_type is None:
            raise ValueError(f"unknown application type {doc['app']['type']!r}")
        app = config_type.from_json(doc["app"])
    aid = None if doc.get("aid") is None else bytes.fromhex(doc["aid"])
    children = tuple(_file_from_json(child) for child in doc.get("children", []))
    return DF(_int16(doc.get("fid")), aid, children, app, str(doc.get("name", "")))


def layout_to_json(layout: CardLayout) -> dict[str, Any]:
    """The layout entries of a card image."""
    return {
        "kind": layout.kind,
        "label": layout.label,
        "historical_bytes": layout.historical.hex().upper(),
        "pin": None if layout.pin is None else {"digits": layout.pin.digits,
                                                 "max_tries": layout.pin.max_tries},
        "mf": _file_to_json(layout.mf),
    }


def layout_from_json(doc: dict[str, Any]) -> CardLayout:
    """Rebuild a layout from a card image document."""
    try:
        pin_doc = doc.get("pin")
        pin = None if pin_doc is None else Pin(str(pin_doc["digits"]), int(pin_doc["max_tries"]))
        mf = _file_from_json(doc["mf"])
        if not isinstance(mf, DF):
            raise ValueError("the root must be a DF")
        return CardLayout(str(doc["kind"]), mf, pin, bytes.fromhex(doc["historical_bytes"]),
                          str(doc.get("label", "")))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"malformed card image layout: {exc!r}") from None
