"""Operator's debugging tool for the tick pipeline.

``python -m scripts.debug_pipeline decode [FILE|-]`` shows what Kite actually sent: each
tick of a recording, of hex/base64 frames pasted from a log, or of one raw frame, as one
JSON line laid out exactly like the Redis ``tick:{token}`` hash (same field names, same
string values, built by the same ``storage.tick_hash`` function), so a line can be compared
with ``HGETALL tick:{token}`` directly. Decode problems are never fatal: they are counted and
summarised on stderr, and the exit code is 0 unless the input could not be read.

``python -m scripts.debug_pipeline explain --token T --at TIME`` shows, for each of the
eight patterns, the inputs at that bar and which condition passed or failed
(:mod:`scripts.pipeline_explain`).

``tail``, ``replay`` and ``diff`` (topics from an offset or a time filtered by token or
symbol; a recording or topic range into a separate pipeline instance; a token recomputed
from its ticks with the core and compared with Redis) live in
:mod:`scripts.pipeline_tools`. Each subcommand registers itself in :func:`build_parser`
and gets the parsed arguments.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TextIO, cast

from core.frame_file import MAGIC, is_recording, read_frames
from core.kite_protocol import DecodeStats, decode_frame
from storage.tick_hash import tick_hash

if TYPE_CHECKING:
    from core.tick import Tick

#: Exit code when the input cannot be read at all (missing file, permission).
EXIT_UNREADABLE = 1

Command = Callable[[argparse.Namespace], int]


# --- input --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputFrame:
    frame: bytes
    #: Receive time from a recording; None for pasted or raw frames.
    received_at_ms: int | None = None


@dataclass
class DecodeInput:
    """The frames found in an input, and what was wrong with the input itself.

    ``frames`` is lazy for a recording (a day of full-mode ticks is gigabytes), so
    ``problems`` and ``notes`` are complete only once it has been consumed.
    """

    kind: str  # "recording", "hex", "base64", "binary" or "empty"
    frames: Iterable[InputFrame]
    problems: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Rejoined:
    """A stream with its first bytes (already read to sniff the format) put back in front,
    counting what it serves so a torn last record can be told from a clean end."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest
        self.served = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            data = self._head + self._rest.read()
            self._head = b""
        else:
            data = self._head[:size]
            self._head = self._head[size:]
            if len(data) < size:
                data += self._rest.read(size - len(data))
        self.served += len(data)
        return data


_PRINTABLE = re.compile(rb"[\x20-\x7e\t\r\n]*")
_HEX_LINE = re.compile(r"(?:0x)?(?:[0-9a-fA-F]{2}[\s:]*)+")
_MAX_NOTES = 5
#: int64 received_at_ms + uint32 length before each recorded frame (core.frame_file).
_RECORD_HEADER = struct.calcsize(">qI")


def _text_lines(data: bytes) -> list[tuple[int, str]] | None:
    """Numbered non-blank, non-comment lines if ``data`` is printable text, else None.

    A raw binary frame always contains bytes outside printable ASCII (its uint16 count and
    lengths start with 0x00 for any real frame), so printable input is frames as text.
    """
    if not _PRINTABLE.fullmatch(data):
        return None
    lines = []
    for number, line in enumerate(data.decode("ascii").splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((number, stripped))
    return lines


def _from_hex(line: str) -> bytes:
    digits = re.sub(r"[\s:]", "", line.removeprefix("0x"))
    return bytes.fromhex(digits)


_URLSAFE = str.maketrans("-_", "+/")


def _from_base64(line: str) -> bytes:
    """Standard or URL-safe alphabet; anything else is an error, not silently dropped."""
    return base64.b64decode(line.translate(_URLSAFE), validate=True)


def _recorded(reader: _Rejoined, result: DecodeInput) -> Iterator[InputFrame]:
    whole = len(MAGIC)
    for record in read_frames(cast(BinaryIO, reader)):
        whole += _RECORD_HEADER + len(record.frame)
        yield InputFrame(record.frame, record.received_at_ms)
    if reader.served > whole:
        # The recorder was killed mid-write; read_frames stops quietly, we say so.
        result.problems["truncated_record"] = 1
        result.notes.append(f"recording ends with {reader.served - whole} bytes of a torn record")


def parse_input(source: BinaryIO) -> DecodeInput:
    """Auto-detects the input form: recording, hex or base64 lines, else one raw frame.

    A recording is streamed; the other forms are small and read whole. Hex is tried for
    the whole text first and base64 only if some line is not hex, because every hex line
    is also valid base64 but not the other way round.
    """
    head = source.read(len(MAGIC))
    if is_recording(head):
        result = DecodeInput("recording", [])
        result.frames = _recorded(_Rejoined(head, source), result)
        return result
    data = head + source.read()
    if not data:
        return DecodeInput("empty", [])
    lines = _text_lines(data)
    if lines is None:
        return DecodeInput("binary", [InputFrame(data)])
    if all(_HEX_LINE.fullmatch(text) for _, text in lines):
        return DecodeInput("hex", [InputFrame(_from_hex(text)) for _, text in lines])
    frames: list[InputFrame] = []
    result = DecodeInput("base64", frames)
    for number, text in lines:
        try:
            frames.append(InputFrame(_from_base64(text)))
        except (binascii.Error, ValueError):
            result.problems["bad_line"] = result.problems.get("bad_line", 0) + 1
            if len(result.notes) < _MAX_NOTES:
                result.notes.append(f"line {number}: neither hex nor base64: {text[:40]!r}")
    return result


def _open_source(name: str) -> BinaryIO:
    return sys.stdin.buffer if name == "-" else Path(name).open("rb")


# --- instruments --------------------------------------------------------------------------


class _Instrument(Protocol):
    @property
    def tradingsymbol(self) -> str: ...
    @property
    def exchange(self) -> str: ...


class _Master(Protocol):
    def get(self, token: int) -> _Instrument | None: ...


def load_instruments(path: str | None) -> tuple[_Master | None, str | None]:
    """The instrument master for symbols, or (None, reason) if it cannot be had.

    Symbols are a convenience here, never a reason to fail: without a master, ``symbol``
    is empty and ``exchange`` is the segment name, as in Redis for an unknown token.
    """
    try:
        from config.instruments import InstrumentMaster
    except ImportError as exc:
        return None, f"no instrument master module ({exc})"
    source: str | Path | None = path
    if source is None:
        try:
            from config.settings import get_settings

            source = get_settings().instruments_path
        except Exception as exc:  # a bad TICKFLOW_* variable must not stop a decode
            return None, f"settings unreadable ({exc})"
    try:
        master: _Master = InstrumentMaster.load(source)
    except Exception as exc:  # missing/corrupt CSV: decode without symbols
        return None, f"instrument master not loaded ({exc})"
    return master, None


# --- decode -------------------------------------------------------------------------------


def _tick_lines(
    frames: Iterable[InputFrame],
    stats: DecodeStats,
    lookup: Callable[[int], tuple[str, str]],
    keep: Callable[[Tick, str], bool],
) -> Iterator[str]:
    for item in frames:
        for tick in decode_frame(item.frame, stats):
            symbol, exchange = lookup(tick.instrument_token)
            if keep(tick, symbol):
                yield json.dumps(tick_hash(tick, item.received_at_ms, symbol, exchange))


def _summary(parsed: DecodeInput, stats: DecodeStats) -> str:
    text = (
        f"decode: {parsed.kind} input, {stats.frames} frames ({stats.heartbeats} heartbeats), "
        f"{stats.packets} packets, {stats.ticks} ticks"
    )
    errors = {**parsed.problems, **stats.errors}
    if errors:
        text += "; errors: " + ", ".join(f"{k}={v}" for k, v in sorted(errors.items()))
    return text


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode frames to one JSON line per tick (the Redis tick hash layout)."""
    try:
        source = _open_source(args.input)
        parsed = parse_input(source)
    except OSError as exc:
        print(f"decode: cannot read {args.input}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE

    master: _Master | None = None
    if not args.no_instruments:
        master, reason = load_instruments(args.instruments)
        if reason and args.instruments is not None:
            print(f"decode: {reason}; symbols left empty", file=sys.stderr)
    cache: dict[int, tuple[str, str]] = {}

    def lookup(token: int) -> tuple[str, str]:
        if token not in cache:
            inst = master.get(token) if master is not None else None
            cache[token] = (inst.tradingsymbol, inst.exchange) if inst else ("", "")
        return cache[token]

    tokens = set(args.token or ())
    symbols = {s.upper() for s in args.symbol or ()}

    def keep(tick: Tick, symbol: str) -> bool:
        if tokens and tick.instrument_token not in tokens:
            return False
        return not symbols or symbol.upper() in symbols

    stats = DecodeStats()
    out: TextIO = sys.stdout
    try:
        for line in _tick_lines(parsed.frames, stats, lookup, keep):
            out.write(line + "\n")
        out.flush()
    except BrokenPipeError:
        # `... | head`: the reader has what it wanted. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the input failed mid-way (I/O error, file removed)
        print(f"decode: cannot read {args.input}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    for note in parsed.notes:
        print(f"decode: {note}", file=sys.stderr)
    print(_summary(parsed, stats), file=sys.stderr)
    return 0


def _add_decode(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="decode Kite frames to JSON lines (one per tick)",
        description=(
            "Decode Kite binary frames and print each tick as one JSON line with the fields "
            "of the Redis tick:{token} hash. Input (auto-detected): a tickflow recording "
            f"(magic {MAGIC!r}), text with one hex or base64 frame per line ('#' comments "
            "allowed), or else one raw binary frame."
        ),
    )
    parser.add_argument("input", nargs="?", default="-", help="file, or - for stdin (default)")
    parser.add_argument(
        "--instruments",
        metavar="PATH",
        help="instrument master CSV for symbols (default: TICKFLOW_INSTRUMENTS_PATH or the "
        "bundled master)",
    )
    parser.add_argument(
        "--no-instruments", action="store_true", help="do not load the instrument master"
    )
    parser.add_argument(
        "--token", type=int, action="append", metavar="N", help="only this token (repeatable)"
    )
    parser.add_argument(
        "--symbol", action="append", metavar="SYM", help="only this tradingsymbol (repeatable)"
    )
    parser.set_defaults(func=cmd_decode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.debug_pipeline",
        description="Inspect the tickflow pipeline: decode frames, tail, replay, diff, explain.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One _add_<command>(subparsers) per subcommand; each sets func=cmd_<command>.
    _add_decode(subparsers)
    from scripts.pipeline_explain import add_explain
    from scripts.pipeline_tools import register

    add_explain(subparsers)
    register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
