"""Market regime from India VIX: LOW, NORMAL, HIGH or PANIC (analytics-spec section 4).

The regime agent turns each India VIX tick into a :class:`RegimeState`, writes it to the
Redis ``regime`` hash (:meth:`RegimeState.to_redis`) and to a replicated table
(:meth:`RegimeState.to_dict`), from which every worker's pattern agent reads it without a
Redis round trip. The thresholds are parameters (the ``regime_*`` settings), not
constants, so that the core stays free of configuration.

Each threshold is the first value of the higher regime (VIX 15.0 is NORMAL, 20.0 HIGH,
25.0 PANIC): "NORMAL 15 to 20, HIGH 20 to 25, PANIC 25 and above" then has no value in
two regimes and none in no regime. Comparisons are plain floats against the thresholds,
so a VIX printed as 20.0 is HIGH, never NORMAL by a rounding accident.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from core.timeutil import iso_from_epoch

DEFAULT_NORMAL_FROM: Final = 15.0
DEFAULT_HIGH_FROM: Final = 20.0
DEFAULT_PANIC_FROM: Final = 25.0

#: The fields of the Redis ``regime`` hash (DESIGN.md, schema v1), in schema order.
REGIME_FIELDS: Final[tuple[str, ...]] = ("vix", "regime", "event_time")


class Regime(StrEnum):
    """A string enum: the value is what Redis, the table and alerts carry."""

    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    PANIC = "PANIC"


def classify(
    vix: float,
    *,
    normal_from: float = DEFAULT_NORMAL_FROM,
    high_from: float = DEFAULT_HIGH_FROM,
    panic_from: float = DEFAULT_PANIC_FROM,
) -> Regime:
    """The regime of one VIX value; a boundary value belongs to the higher regime.

    Raises ``ValueError`` for a VIX that is not a finite non-negative number (a bad tick,
    which the agent counts and skips) or thresholds that are not finite and
    non-decreasing (a configuration error, which must not be silently reordered).
    """
    if not (math.isfinite(normal_from) and math.isfinite(high_from) and math.isfinite(panic_from)):
        raise ValueError("regime thresholds must be finite")
    if not normal_from <= high_from <= panic_from:
        raise ValueError(
            f"regime thresholds must not decrease: normal_from={normal_from}, "
            f"high_from={high_from}, panic_from={panic_from}"
        )
    if not (math.isfinite(vix) and vix >= 0):
        raise ValueError(f"VIX must be a finite non-negative number, got {vix!r}")
    if vix >= panic_from:
        return Regime.PANIC
    if vix >= high_from:
        return Regime.HIGH
    if vix >= normal_from:
        return Regime.NORMAL
    return Regime.LOW


@dataclass(frozen=True, slots=True)
class RegimeState:
    """The latest regime: the ``regime`` hash and the replicated table's value."""

    vix: float
    regime: Regime
    event_time: float  # epoch seconds

    def to_redis(self) -> dict[str, str]:
        """Field -> string for HSET: the VIX as its shortest round-tripping repr, the
        regime's name, the event time as ISO 8601 with +05:30."""
        return {
            "vix": str(float(self.vix)),
            "regime": self.regime.value,
            "event_time": iso_from_epoch(self.event_time),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain values for the replicated table; :meth:`from_dict` inverts it."""
        return {"vix": self.vix, "regime": self.regime.value, "event_time": self.event_time}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegimeState:
        return cls(float(data["vix"]), Regime(data["regime"]), float(data["event_time"]))

    def supersedes(self, current: RegimeState | None) -> bool:
        """Whether this state should replace ``current`` in the table: not older than it.

        Delivery is at least once, so a redelivered older VIX tick must not overwrite a
        newer regime; an equal event time replaces (a redelivery writes the same value).
        """
        return current is None or self.event_time >= current.event_time


def regime_state(
    vix: float,
    event_time: float,
    *,
    normal_from: float = DEFAULT_NORMAL_FROM,
    high_from: float = DEFAULT_HIGH_FROM,
    panic_from: float = DEFAULT_PANIC_FROM,
) -> RegimeState:
    """:func:`classify` one VIX tick at ``event_time`` (epoch seconds) into a state."""
    regime = classify(vix, normal_from=normal_from, high_from=high_from, panic_from=panic_from)
    return RegimeState(float(vix), regime, float(event_time))


# --- the regime over time (the replicated table's value) ---------------------------------
#: Regime changes kept with the latest state: enough for any bar a worker can still be
#: behind on, bounded so the replicated value stays small.
HISTORY_LENGTH: Final = 256


def record_state(
    value: Mapping[str, Any] | None, state: RegimeState, keep: int = HISTORY_LENGTH
) -> dict[str, Any] | None:
    """The table value after ``state``: the latest state plus ``history``, the regime
    changes as ``[event_time, regime, vix]``; None when ``state`` is older than the
    latest (a redelivered tick must not go back in time)."""
    current = RegimeState.from_dict(value) if value else None
    if not state.supersedes(current):
        return None
    history = list(value.get("history") or []) if value else []
    if not history or history[-1][1] != state.regime.value:
        history.append([state.event_time, state.regime.value, state.vix])
    return {**state.to_dict(), "history": history[-keep:]}


def state_at(value: Mapping[str, Any] | None, event_time: float) -> RegimeState | None:
    """The regime in effect at ``event_time`` (a bar's end) per a :func:`record_state`
    value: the latest state from its event time on, else the last change at or before
    ``event_time`` (the earliest known change for an earlier time)."""
    if not value:
        return None
    latest = RegimeState.from_dict(value)
    if event_time >= latest.event_time:
        return latest
    history = value.get("history") or []
    if not history:
        return latest
    chosen = history[0]
    for change in history:
        if change[0] > event_time:
            break
        chosen = change
    return RegimeState(float(chosen[2]), Regime(chosen[1]), float(chosen[0]))
