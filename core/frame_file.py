"""Recorded Kite frames: the file the ingestor writes and the simulator and
``debug_pipeline`` replay.

A recording keeps whole WebSocket binary frames exactly as received (heartbeats
included) with their receive time, so a replay reproduces both the bytes and the pacing.

Layout: the magic line ``TFKREC1\\n``, then records of ``int64 received_at_ms``,
``uint32 length`` (big-endian) and ``length`` frame bytes. A truncated last record (the
recorder was killed mid-write) ends the file; it is reported, never raised.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"TFKREC1\n"
_RECORD = struct.Struct(">qI")


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    received_at_ms: int
    frame: bytes


class FrameWriter:
    """Appends frames to a recording; the file is created with its magic line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        self._file: BinaryIO = path.open("ab")
        if fresh:
            self._file.write(MAGIC)

    def write(self, received_at_ms: int, frame: bytes) -> None:
        self._file.write(_RECORD.pack(received_at_ms, len(frame)))
        self._file.write(frame)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def is_recording(head: bytes) -> bool:
    return head.startswith(MAGIC)


def read_frames(source: BinaryIO) -> Iterator[RecordedFrame]:
    """Yields the frames of a recording; stops quietly at a truncated tail."""
    if source.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a tickflow frame recording (bad magic)")
    while True:
        header = source.read(_RECORD.size)
        if len(header) < _RECORD.size:
            return
        received_at_ms, length = _RECORD.unpack(header)
        frame = source.read(length)
        if len(frame) < length:
            return
        yield RecordedFrame(received_at_ms, frame)
