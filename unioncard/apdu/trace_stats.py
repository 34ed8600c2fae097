"""Statistics of a trace, computed from the bulk indexer's arrays.

`TraceStats` accumulates `TraceIndex` parts as `iter_index` yields them (so a
multi-GB trace is summarised in bounded memory) and `TraceStats.summary` gives
one JSON-ready document: frames and exchanges per device, counts per command,
per status word and per TLV tag, and malformed frames and malformed TLV with
examples (frame index and offset).

Exchanges pair each response with the latest unanswered command of the same
device (card or PSAM); a command superseded by another command, or still
waiting at the end, is *unanswered*; a response with no command waiting is an
*orphan*.  Frames of unknown kind and a truncated last frame take no part in
pairing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from unioncard.apdu.indexer import FrameStatus, TlvClass, TraceIndex
from unioncard.apdu.instructions import command_name
from unioncard.apdu.status import describe
from unioncard.apdu.tags import name_of
from unioncard.apdu.tlv import tag_bytes

__all__ = ["EXAMPLES", "REASONS", "TraceStats"]

EXAMPLES = 20
"""How many malformed frames and malformed TLV responses are listed by index."""

REASONS = {
    FrameStatus.UNKNOWN_KIND: "unknown frame kind",
    FrameStatus.TRUNCATED: "truncated at the end of the trace",
    FrameStatus.NO_SW: "response shorter than its status word",
    FrameStatus.BAD_COMMAND: "command is not a valid APDU encoding",
}
_DEVICES = ("card", "psam")


class TraceStats:
    """Accumulates index parts; ``offsets`` says whether byte offsets mean anything.

    For a binary trace offsets are file offsets; for a text or pcsc-spy source
    the indexer saw a binary re-encoding, so only frame indexes are reported.
    """

    def __init__(self, *, offsets: bool = True) -> None:
        self.offsets = offsets
        self.magic_ok = True
        self.size = 0
        self.frames = 0
        self.status: Counter[int] = Counter()
        self.commands = np.zeros(2, np.int64)
        self.responses = np.zeros(2, np.int64)
        self.exchanges = np.zeros(2, np.int64)
        self.orphans = np.zeros(2, np.int64)
        self.command_keys: Counter[int] = Counter()
        self.status_words: Counter[int] = Counter()
        self.tlv: Counter[int] = Counter()
        self.objects = 0
        self.tags: Counter[int] = Counter()
        self.bad_frames: list[dict[str, Any]] = []
        self.bad_tlv: list[dict[str, Any]] = []

    def add(self, part: TraceIndex) -> None:
        """Fold one index part in."""
        if not part.magic_ok:
            self.magic_ok = False
            return
        self.size = max(self.size, part.end)
        self.frames += part.frames
        status = part.frame_status
        kind = part.frame_kind
        self.status.update(_counts(status))
        paired = (status != FrameStatus.UNKNOWN_KIND) & (status != FrameStatus.TRUNCATED)
        psam = (kind & 0x10) != 0
        is_command = paired & ((kind == 0x01) | (kind == 0x11))
        is_response = paired & ((kind == 0x02) | (kind == 0x12))
        answered = is_response & (part.frame_peer >= 0)
        for device, mask in enumerate((~psam, psam)):
            self.commands[device] += int(np.count_nonzero(is_command & mask))
            self.responses[device] += int(np.count_nonzero(is_response & mask))
            self.exchanges[device] += int(np.count_nonzero(answered & mask))
            self.orphans[device] += int(np.count_nonzero(is_response & ~answered & mask))
        self.command_keys.update(_counts(part.frame_command[is_command]))
        sw = part.frame_sw[is_response]
        self.status_words.update(_counts(sw[sw >= 0]))
        self.tlv.update(_counts(part.frame_tlv[is_response]))
        self.objects += part.objects
        self.tags.update(_counts(part.object_tag))
        if len(self.bad_frames) < EXAMPLES:
            for i in np.flatnonzero(status != FrameStatus.OK)[: EXAMPLES - len(self.bad_frames)]:
                example: dict[str, Any] = {"frame": part.first_frame + int(i),
                                           "reason": REASONS[FrameStatus(int(status[i]))]}
                if self.offsets:
                    example["offset"] = int(part.frame_offset[i])
                self.bad_frames.append(example)
        if len(self.bad_tlv) < EXAMPLES:
            bad = np.flatnonzero(part.frame_tlv == TlvClass.MALFORMED)
            for i in bad[: EXAMPLES - len(self.bad_tlv)]:
                error = int(part.frame_tlv_error[i])
                example = {"frame": part.first_frame + int(i),
                           "data_offset": error - int(part.frame_offset[i]) - 3}
                if self.offsets:
                    example["offset"] = error
                self.bad_tlv.append(example)

    @property
    def malformed_frames(self) -> int:
        return sum(n for status, n in self.status.items() if status != FrameStatus.OK)

    def summary(self) -> dict[str, Any]:
        """The statistics as one JSON-ready document."""
        unanswered = self.commands - self.exchanges
        names: Counter[str] = Counter()
        for key, n in self.command_keys.items():
            names[_command(key)] += n
        return {
            "bytes": self.size,
            "frames": {
                "total": self.frames,
                "commands": int(self.commands.sum()),
                "responses": int(self.responses.sum()),
                "malformed": self.malformed_frames,
                "by_device": {d: {"commands": int(self.commands[i]),
                                  "responses": int(self.responses[i])}
                              for i, d in enumerate(_DEVICES)},
            },
            "exchanges": {
                "total": int(self.exchanges.sum()),
                "unanswered_commands": int(unanswered.sum()),
                "orphan_responses": int(self.orphans.sum()),
                "by_device": {d: {"exchanges": int(self.exchanges[i]),
                                  "unanswered_commands": int(unanswered[i]),
                                  "orphan_responses": int(self.orphans[i])}
                              for i, d in enumerate(_DEVICES)},
            },
            "commands": dict(names.most_common()),
            "status_words": {f"{sw:04X}": {"count": n, "meaning": describe(sw).split(": ", 1)[1]}
                             for sw, n in self.status_words.most_common()},
            "malformed_frames": {
                "total": self.malformed_frames,
                "by_reason": {REASONS[FrameStatus(s)]: n for s, n in sorted(self.status.items())
                              if s != FrameStatus.OK},
                "examples": self.bad_frames,
            },
            "tlv": {
                "responses_tlv": self.tlv[TlvClass.OK],
                "responses_malformed_tlv": self.tlv[TlvClass.MALFORMED],
                "responses_raw_data": self.tlv[TlvClass.RAW],
                "responses_without_data": self.tlv[TlvClass.NONE],
                "objects": self.objects,
                "malformed_examples": self.bad_tlv,
                "tags": {tag_bytes(tag).hex().upper(): {"count": n, "name": name_of(tag)}
                         for tag, n in self.tags.most_common()},
            },
        }


def _counts(values: np.ndarray[Any, Any]) -> dict[int, int]:
    if values.size == 0:
        return {}
    keys, counts = np.unique(values, return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist(), strict=True))


def _command(key: int) -> str:
    if key < 0:
        return "MALFORMED (shorter than 4 bytes)"
    return command_name(bytes(((key >> 16) & 0xFF, (key >> 8) & 0xFF, key & 0xFF, 0)))
