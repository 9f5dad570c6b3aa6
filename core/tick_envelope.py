"""The record format of the ``ticks`` topic.

The ingestor publishes the raw Kite packet, unchanged, behind a small fixed header that
carries the receive time. Keeping the exchange's own bytes (instead of re-encoding to
JSON) makes the tick hop cheap (no per-tick JSON encode in the ingestor nor decode in the
worker), loses nothing, and lets ``debug_pipeline`` show exactly what Kite sent.

Layout (big-endian): ``uint8 version`` (=1), ``int64 received_at_ms``, packet bytes.
The key is the instrument token as ASCII decimal, so every partitioner (aiokafka's,
Redpanda's, the Java client's murmur2) places a token identically.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 1
_HEADER = struct.Struct(">Bq")
HEADER_SIZE = _HEADER.size


class EnvelopeError(ValueError):
    """A ticks-topic record that is not in the format above."""


@dataclass(frozen=True, slots=True)
class TickRecord:
    received_at_ms: int
    packet: bytes


def encode(packet: bytes, received_at_ms: int) -> bytes:
    return _HEADER.pack(VERSION, received_at_ms) + packet


def decode(value: bytes) -> TickRecord:
    if len(value) < HEADER_SIZE:
        raise EnvelopeError(f"record of {len(value)} bytes is shorter than the header")
    version, received_at_ms = _HEADER.unpack_from(value)
    if version != VERSION:
        raise EnvelopeError(f"unknown ticks record version {version}")
    return TickRecord(received_at_ms, bytes(value[HEADER_SIZE:]))


def token_key(instrument_token: int) -> bytes:
    return str(instrument_token).encode("ascii")
