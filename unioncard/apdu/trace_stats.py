"""Statistics of a trace, computed from the bulk indexer's arrays.

`TraceStats` accumulates `TraceIndex` parts as `iter_index` yields them (so a
multi-GB trace is summarised in bounded memory) and `TraceStats.summary` gives
one JSON-ready document: frames and exchanges per device, counts per command,
per status word and per TLV tag, and malformed frames and malformed TLV with
examples (frame index and offset).  Memory is constant: counts live in fixed
arrays (status words and one- and two-byte tags by value), whatever the size
of the trace.

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
from unioncard.jit import jit

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


@jit
def _tally(kind: Any, status: Any, peer: Any, command: Any, sw: Any, tlv_class: Any, tag: Any,
           devices: Any, statuses: Any, classes: Any, status_words: Any, commands: Any,
           initialize: Any, short: Any, small_tags: Any) -> int:
    """Count one index part into the count arrays; return how many tags exceed two bytes.

    ``devices[d]`` holds commands, responses, answered responses and orphans of
    device d (0 card, 1 PSAM); ``commands`` counts CLA INS pairs, ``initialize``
    the P1 of proprietary INS 50 (whose name depends on P1).
    """
    for i in range(kind.shape[0]):
        verdict = status[i]
        statuses[verdict] += 1
        if verdict == FrameStatus.UNKNOWN_KIND or verdict == FrameStatus.TRUNCATED:
            continue
        k = kind[i]
        d = 1 if k & 0x10 else 0
        if k == 0x01 or k == 0x11:
            devices[d, 0] += 1
            key = command[i]
            if key < 0:
                short[0] += 1
            else:
                cla = key >> 16
                ins = (key >> 8) & 0xFF
                if ins == 0x50 and cla & 0x80 and cla != 0xFF:
                    initialize[key & 0xFF] += 1
                else:
                    commands[(cla << 8) | ins] += 1
        else:
            devices[d, 1] += 1
            if peer[i] >= 0:
                devices[d, 2] += 1
            else:
                devices[d, 3] += 1
            if sw[i] >= 0:
                status_words[sw[i]] += 1
            classes[tlv_class[i]] += 1
    big = 0
    for j in range(tag.shape[0]):
        t = tag[j]
        if t < 0x10000:
            small_tags[t] += 1
        else:
            big += 1
    return big


class TraceStats:
    """Accumulates index parts; ``offsets`` says whether byte offsets mean anything.

    For a binary trace offsets are file offsets; for a text or pcsc-spy source
    the indexer saw a binary re-encoding, so only frame indexes are reported.
    Counting is one pass of a numba kernel over each part (`_tally`).
    """

    def __init__(self, *, offsets: bool = True) -> None:
        self.offsets = offsets
        self.magic_ok = True
        self.size = 0
        self.frames = 0
        self.objects = 0
        self.devices = np.zeros((2, 4), np.int64)
        self.statuses = np.zeros(8, np.int64)
        self.classes = np.zeros(4, np.int64)
        self.status_words = np.zeros(0x10000, np.int64)
        self.commands = np.zeros(0x10000, np.int64)
        self.initialize = np.zeros(0x100, np.int64)
        self.short = np.zeros(1, np.int64)
        self.small_tags = np.zeros(0x10000, np.int64)
        self.big_tags: Counter[int] = Counter()
        self.bad_frames: list[dict[str, Any]] = []
        self.bad_tlv: list[dict[str, Any]] = []

    def add(self, part: TraceIndex) -> None:
        """Fold one index part in (the part may be reused afterwards)."""
        if not part.magic_ok:
            self.magic_ok = False
            return
        self.size = max(self.size, part.end)
        self.frames += part.frames
        self.objects += part.objects
        big = _tally(part.frame_kind, part.frame_status, part.frame_peer, part.frame_command,
                     part.frame_sw, part.frame_tlv, part.object_tag, self.devices,
                     self.statuses, self.classes, self.status_words, self.commands,
                     self.initialize, self.short, self.small_tags)
        if big:
            tags = part.object_tag[part.object_tag >= 0x10000]
            keys, counts = np.unique(tags, return_counts=True)
            self.big_tags.update(dict(zip(keys.tolist(), counts.tolist(), strict=True)))
        if len(self.bad_frames) < EXAMPLES:
            status = part.frame_status
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
        return int(self.statuses.sum() - self.statuses[FrameStatus.OK])

    def summary(self) -> dict[str, Any]:
        """The statistics as one JSON-ready document."""
        commands, responses, exchanges, orphans = (self.devices[:, i] for i in range(4))
        unanswered = commands - exchanges
        names: Counter[str] = Counter()
        for key in np.flatnonzero(self.commands).tolist():
            names[command_name(bytes((key >> 8, key & 0xFF, 0, 0)))] += int(self.commands[key])
        for p1 in np.flatnonzero(self.initialize).tolist():
            names[command_name(bytes((0x80, 0x50, p1, 0)))] += int(self.initialize[p1])
        if self.short[0]:
            names["MALFORMED (shorter than 4 bytes)"] += int(self.short[0])
        status_words = _nonzero(self.status_words)
        tags = Counter(_nonzero(self.small_tags))
        tags.update(self.big_tags)
        classes = self.classes.tolist()
        return {
            "bytes": self.size,
            "frames": {
                "total": self.frames,
                "commands": int(commands.sum()),
                "responses": int(responses.sum()),
                "malformed": self.malformed_frames,
                "by_device": {d: {"commands": int(commands[i]), "responses": int(responses[i])}
                              for i, d in enumerate(_DEVICES)},
            },
            "exchanges": {
                "total": int(exchanges.sum()),
                "unanswered_commands": int(unanswered.sum()),
                "orphan_responses": int(orphans.sum()),
                "by_device": {d: {"exchanges": int(exchanges[i]),
                                  "unanswered_commands": int(unanswered[i]),
                                  "orphan_responses": int(orphans[i])}
                              for i, d in enumerate(_DEVICES)},
            },
            "commands": dict(names.most_common()),
            "status_words": {f"{sw:04X}": {"count": n, "meaning": describe(sw).split(": ", 1)[1]}
                             for sw, n in Counter(status_words).most_common()},
            "malformed_frames": {
                "total": self.malformed_frames,
                "by_reason": {REASONS[FrameStatus(s)]: int(n) for s, n in
                              enumerate(self.statuses.tolist()) if s != FrameStatus.OK and n},
                "examples": self.bad_frames,
            },
            "tlv": {
                "responses_tlv": classes[TlvClass.OK],
                "responses_malformed_tlv": classes[TlvClass.MALFORMED],
                "responses_raw_data": classes[TlvClass.RAW],
                "responses_without_data": classes[TlvClass.NONE],
                "objects": self.objects,
                "malformed_examples": self.bad_tlv,
                "tags": {tag_bytes(tag).hex().upper(): {"count": n, "name": name_of(tag)}
                         for tag, n in tags.most_common()},
            },
        }


def _nonzero(counts: np.ndarray[Any, Any]) -> dict[int, int]:
    keys = np.flatnonzero(counts)
    return dict(zip(keys.tolist(), counts[keys].tolist(), strict=True))
