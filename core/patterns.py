"""The eight core patterns (analytics-spec section 5), evaluated per token on each closed bar.

The pattern agent feeds every closed 1-minute bar of a token, with that bar's volume ratio,
RSI(14), ATR(14) and the current market regime, to :func:`evaluate`. It advances a small
per-token :class:`PatternState` (plain JSON through :meth:`PatternState.to_dict` /
:meth:`~PatternState.from_dict`, kept in the worker's table) and returns the
:class:`Alert` objects to publish. :func:`explain` runs the very same rules without
touching the state and reports every input and condition, for the debug command. Pure and
deterministic: no clock (cooldowns run on event time), no I/O, no settings import (the
caller builds a :class:`PatternConfig`, e.g. with :func:`make_config`).

Interpretations this module makes where the spec leaves room (each one tested):

**pc.** Percent change of the bar's close over the previous bar's close, in percent
(``0.5`` means half a percent), rounded to 6 decimals (1e-8 relative, far below any tick)
so that a move of exactly 0.1% compares as 0.1 and not as 0.09999999999999432. The
previous close is that of the previous bar this state saw, whatever its session: the first
bar of a day carries the overnight gap, which is the move a trader sees at the open. With
no previous bar (or a non-positive previous close) pc is missing.

**Thresholds.** ``T`` = base x the regime's volume multiplier of the pattern and every
price threshold written with ``m`` in the spec's table (0.3m, 0.5m, 0.4m%, 0.2m%) is
multiplied by the regime's price multiplier, both rounded to 10 decimals so that a ratio
written exactly at a threshold (2.86 = 2.2 x 1.3) fires as ``>=`` says. The table is
taken literally where it writes no ``m``: the 0.1% floors of volume_spike and
hidden_accumulation, divergence's 0.8 ratio, hidden_accumulation's ratio cap 2.0 and the
RSI bounds are the same in every regime (the specific table wins over the general
sentence). PANIC's price multiplier is 1.0, as the spec says ("else 1.0"). With the
default multipliers, hidden_accumulation cannot fire in HIGH (T = 2.08) or PANIC
(T = 2.88), because its rule also wants r < 2.0: that is the spec's table, kept as is.

**Regime.** ``LOW``/``NORMAL``/``HIGH``/``PANIC`` (case-insensitive). ``None``, before the
first VIX tick, is treated as NORMAL: the alert's ``regime`` field then says ``NORMAL`` and
its ``vix`` is empty, and :func:`explain` reports ``regime_assumed``. Any other string is a
``ValueError`` (a configuration error, not something to guess at).

**Missing inputs.** A missing or non-finite volume ratio, RSI or pc fails every condition
that reads it, so the volume-based patterns (all eight) cannot fire without r, and the
RSI-based ones (momentum, breakout, hidden_accumulation) cannot fire without RSI. A
missing ATR only leaves the alert without a stop-loss.

**Breakout.** "The previous 20 bars" are the 20 bars before the current one (the current
bar's own high is not part of the level it breaks); with fewer than 20 earlier bars the
pattern does not fire, because a range of three bars is no level. "RSI inside 30..70" is
inclusive (30 <= RSI <= 70). Momentum's bounds are strict, as written (RSI < 70, RSI > 30).

**Reversal.** p0..p4 are the last five closes, p4 being the current bar's; the legs
(p2-p0)/p0 and (p4-p2)/p2 are in percent, like pc. With fewer than five closes the pattern
does not fire.

**Flat bars.** A flat bar (no tick in the minute) enters the history (its close is the
previous close, so the next bar's pc is still over one minute) but never alerts: a minute
without a trade is evidence of nothing, yet the trailing volume ratio it carries may still
clear a threshold.

**Cooldown.** An alert's event time is its bar's end (start + 60 s). A (pattern, signal)
that alerted at event time t alerts again only at t + cooldown or later (299 s later: no;
300 s later: yes). Only emitted alerts arm it; a suppressed one does not extend it. The
token is implicit: the state is per token. Expired cooldowns are pruned from the state.

**Redelivery.** A bar whose start is not after the last one evaluated (at-least-once
redelivery, or a late bar) returns ``None`` and changes nothing; ids are deterministic
(``{token}:{pattern}:{signal}:{bar_start}``), so a replay that re-evaluates from an older
state produces the same alerts with the same ids, which the sink deduplicates.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

from core.bars import Bar
from core.timeutil import iso_from_epoch

VOLUME_SPIKE = "volume_spike"
VOLUME_BREAKOUT = "volume_breakout"
VOLUME_PRICE_DIVERGENCE = "volume_price_divergence"
UPSIDE_MOMENTUM = "upside_momentum"
DOWNSIDE_MOMENTUM = "downside_momentum"
BREAKOUT = "breakout"
REVERSAL = "reversal"
HIDDEN_ACCUMULATION = "hidden_accumulation"

#: The eight patterns, in the spec's order (the order of alerts from one bar).
PATTERNS: tuple[str, ...] = (
    VOLUME_SPIKE,
    VOLUME_BREAKOUT,
    VOLUME_PRICE_DIVERGENCE,
    UPSIDE_MOMENTUM,
    DOWNSIDE_MOMENTUM,
    BREAKOUT,
    REVERSAL,
    HIDDEN_ACCUMULATION,
)
REGIMES: tuple[str, ...] = ("LOW", "NORMAL", "HIGH", "PANIC")
#: The regime assumed before the first VIX tick.
DEFAULT_REGIME = "NORMAL"
BUY = "BUY"
SELL = "SELL"
#: Bars are 1 minute long: an alert's event time is its bar's start + this.
BAR_SECONDS = 60
#: Closes the reversal rule reads (p0..p4).
REVERSAL_CLOSES = 5

#: The fields of an alert (analytics-spec section 5), in order: the ``alerts`` stream
#: entry and the ``alerts:live`` JSON carry exactly these.
ALERT_FIELDS: tuple[str, ...] = (
    "id",
    "token",
    "symbol",
    "exchange",
    "pattern",
    "signal",
    "confidence",
    "price",
    "volume_ratio",
    "pc",
    "rsi",
    "regime",
    "vix",
    "bar_start",
    "event_time",
    "stop_loss",
)

#: Confidence bounds and the clearance steps (multiples of a threshold) between them.
CONFIDENCE_MIN = 0.10
CONFIDENCE_MAX = 0.95
CONFIDENCE_STEPS: tuple[float, ...] = (1.5, 2.0, 3.0)

# Spec defaults (settings.py holds the same numbers; a test keeps them equal).
DEFAULT_VOLUME_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {
        VOLUME_SPIKE: 2.2,
        VOLUME_BREAKOUT: 1.8,
        VOLUME_PRICE_DIVERGENCE: 1.5,
        UPSIDE_MOMENTUM: 1.3,
        DOWNSIDE_MOMENTUM: 1.3,
        BREAKOUT: 1.8,
        REVERSAL: 1.6,
        HIDDEN_ACCUMULATION: 1.6,
    }
)
_STANDARD = MappingProxyType({"LOW": 0.7, "NORMAL": 1.0, "HIGH": 1.3, "PANIC": 1.8})
_BREAKOUTS = MappingProxyType({"LOW": 0.8, "NORMAL": 1.0, "HIGH": 1.4, "PANIC": 2.0})
DEFAULT_VOLUME_MULTIPLIERS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {p: _BREAKOUTS if p in (VOLUME_BREAKOUT, BREAKOUT) else _STANDARD for p in PATTERNS}
)
DEFAULT_PRICE_MULTIPLIERS: Mapping[str, float] = MappingProxyType(
    {"LOW": 0.8, "NORMAL": 1.0, "HIGH": 1.4, "PANIC": 1.0}
)

_STATE_VERSION = 1
_PC_DECIMALS = 6
_THRESHOLD_DECIMALS = 10
_CONFIDENCE_DECIMALS = 3
_STOP_DECIMALS = 4  # the finest exchange tick is 0.0001 (currency derivatives)


# --------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True, slots=True)
class PatternConfig:
    """Every threshold, multiplier, window and cooldown of the rules (spec defaults).

    Built once by the caller from the settings (``config.patterns.pattern_config``) or by
    :func:`make_config` from plain values; validated on construction so that a bad
    setting is a clear error at start-up, not a silent rule that never fires. Price
    thresholds are in percent; ``cooldown`` is in seconds of event time.
    """

    volume_thresholds: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_VOLUME_THRESHOLDS
    )
    volume_multipliers: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: DEFAULT_VOLUME_MULTIPLIERS
    )
    price_multipliers: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_PRICE_MULTIPLIERS
    )
    spike_min_move: float = 0.1
    volume_breakout_move: float = 0.3
    divergence_move: float = 0.5
    divergence_low_ratio: float = 0.8
    momentum_move: float = 0.5
    momentum_rsi_max: float = 70.0
    momentum_rsi_min: float = 30.0
    breakout_lookback: int = 20
    breakout_move: float = 0.3
    breakout_rsi_min: float = 30.0
    breakout_rsi_max: float = 70.0
    reversal_first_leg: float = 0.4
    reversal_second_leg: float = 0.2
    hidden_max_ratio: float = 2.0
    hidden_rsi_min: float = 45.0
    hidden_rsi_max: float = 65.0
    hidden_max_move: float = 0.1
    cooldown: int = 300
    stop_atr_multiple: float = 1.5
    stop_max_pct: float = 5.0

    def __post_init__(self) -> None:
        thresholds = _exact_keys("volume_thresholds", self.volume_thresholds, PATTERNS)
        multipliers = _exact_keys("volume_multipliers", self.volume_multipliers, PATTERNS)
        frozen: dict[str, Mapping[str, float]] = {}
        for pattern in PATTERNS:
            per_regime = _exact_keys(
                f"volume_multipliers[{pattern}]", multipliers[pattern], REGIMES
            )
            frozen[pattern] = MappingProxyType(
                {r: _positive(f"volume multiplier {pattern}/{r}", v) for r, v in per_regime.items()}
            )
        prices = _exact_keys("price_multipliers", self.price_multipliers, REGIMES)
        # Frozen copies: a caller's dict changed later cannot change the rules.
        object.__setattr__(
            self,
            "volume_thresholds",
            MappingProxyType(
                {p: _positive(f"volume threshold {p}", v) for p, v in thresholds.items()}
            ),
        )
        object.__setattr__(self, "volume_multipliers", MappingProxyType(frozen))
        object.__setattr__(
            self,
            "price_multipliers",
            MappingProxyType({r: _positive(f"price multiplier {r}", v) for r, v in prices.items()}),
        )
        for name in (
            "spike_min_move",
            "volume_breakout_move",
            "divergence_move",
            "divergence_low_ratio",
            "momentum_move",
            "breakout_move",
            "reversal_first_leg",
            "reversal_second_leg",
            "hidden_max_ratio",
            "hidden_max_move",
            "stop_atr_multiple",
            "stop_max_pct",
        ):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        for low, high in (
            ("momentum_rsi_min", "momentum_rsi_max"),
            ("breakout_rsi_min", "breakout_rsi_max"),
            ("hidden_rsi_min", "hidden_rsi_max"),
        ):
            lo, hi = float(getattr(self, low)), float(getattr(self, high))
            if not 0.0 <= lo <= hi <= 100.0:
                raise ValueError(f"{low}/{high} must satisfy 0 <= {lo} <= {hi} <= 100")
            object.__setattr__(self, low, lo)
            object.__setattr__(self, high, hi)
        object.__setattr__(
            self, "breakout_lookback", _whole("breakout_lookback", self.breakout_lookback, 1)
        )
        object.__setattr__(self, "cooldown", _whole("cooldown", self.cooldown, 0))

    def volume_threshold(self, pattern: str, regime: str) -> float:
        """T = base x the regime's multiplier of the pattern (10 decimals, see module)."""
        product = self.volume_thresholds[pattern] * self.volume_multipliers[pattern][regime]
        return round(product, _THRESHOLD_DECIMALS)

    def price_multiplier(self, regime: str) -> float:
        return self.price_multipliers[regime]

    @property
    def history_bars(self) -> int:
        """Earlier bars the state keeps: the breakout window, and four closes for reversal."""
        return max(self.breakout_lookback, REVERSAL_CLOSES - 1)


def make_config(
    *,
    volume_thresholds: Mapping[str, float] | None = None,
    volume_multipliers: Mapping[str, Mapping[str, float]] | None = None,
    price_multipliers: Mapping[str, float] | None = None,
    **scalars: float,
) -> PatternConfig:
    """A :class:`PatternConfig` from plain values, each mapping merged over the defaults.

    Merging lets an operator override one number in an environment variable
    (``{"volume_spike": 2.5}``, ``{"breakout": {"HIGH": 1.6}}``) without restating the
    other 31; an unknown pattern or regime name is still an error (a typo must not be a
    silent no-op). ``scalars`` are the other fields by name (``cooldown=300``, ...); an
    unknown name is a ``TypeError``.
    """
    thresholds = dict(DEFAULT_VOLUME_THRESHOLDS)
    thresholds.update(volume_thresholds or {})
    multipliers = {p: dict(v) for p, v in DEFAULT_VOLUME_MULTIPLIERS.items()}
    for pattern, per_regime in (volume_multipliers or {}).items():
        if pattern not in multipliers:
            raise ValueError(f"volume_multipliers: unknown pattern {pattern!r}")
        multipliers[pattern].update(per_regime)
    prices = dict(DEFAULT_PRICE_MULTIPLIERS)
    prices.update(price_multipliers or {})
    base = PatternConfig(
        volume_thresholds=thresholds, volume_multipliers=multipliers, price_multipliers=prices
    )
    # The scalars are float or int fields; __post_init__ checks each one's value.
    fields: dict[str, Any] = dict(scalars)
    return replace(base, **fields) if fields else base


def _exact_keys(
    name: str, mapping: Mapping[str, Any], expected: tuple[str, ...]
) -> Mapping[str, Any]:
    keys = set(mapping)
    if keys != set(expected):
        missing = sorted(set(expected) - keys)
        unknown = sorted(keys - set(expected))
        raise ValueError(f"{name}: missing {missing}, unknown {unknown}")
    return mapping


def _positive(name: str, value: float) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _whole(name: str, value: float, minimum: int) -> int:
    number = float(value)
    if not number.is_integer() or number < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(number)


# --------------------------------------------------------------------------------------
# state


@dataclass(slots=True)
class PatternState:
    """What the rules need from a token's earlier bars; plain data, JSON round trip.

    ``bars`` holds ``(high, low, close)`` of the latest bars, oldest first, at most
    :attr:`PatternConfig.history_bars` of them (the breakout window; its last four closes
    are reversal's p0..p3; the last close is pc's previous close). ``cooldowns`` maps
    ``"pattern:signal"`` to the event time (epoch s) of its last alert. ``last_bar_start``
    (epoch s) makes redelivered and late bars no-ops.
    """

    last_bar_start: int | None = None
    bars: list[tuple[float, float, float]] = field(default_factory=list)
    cooldowns: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (floats round-trip exactly through JSON's repr)."""
        return {
            "v": _STATE_VERSION,
            "last_bar_start": self.last_bar_start,
            "bars": [[high, low, close] for high, low, close in self.bars],
            "cooldowns": dict(sorted(self.cooldowns.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatternState:
        """Inverse of :meth:`to_dict`; rejects a snapshot of an unknown version."""
        version = data.get("v")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported pattern state version {version!r}")
        last = data["last_bar_start"]
        return cls(
            last_bar_start=None if last is None else int(last),
            bars=[(float(h), float(lo), float(c)) for h, lo, c in data["bars"]],
            cooldowns={str(k): int(v) for k, v in data["cooldowns"].items()},
        )


# --------------------------------------------------------------------------------------
# alerts


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: exactly the spec's fields. Times are epoch seconds here, ISO 8601 with
    +05:30 in Redis and in the live JSON (the schema's time format)."""

    id: str
    token: int
    symbol: str
    exchange: str
    pattern: str
    signal: str
    confidence: float
    price: float
    volume_ratio: float | None
    pc: float | None
    rsi: float | None
    regime: str
    vix: float | None
    bar_start: int
    event_time: int
    stop_loss: float | None

    @property
    def event_ms(self) -> int:
        """Event time in epoch milliseconds: the ``alerts`` stream entry id's time part."""
        return self.event_time * 1000

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a topic message (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            id=str(data["id"]),
            token=int(data["token"]),
            symbol=str(data["symbol"]),
            exchange=str(data["exchange"]),
            pattern=str(data["pattern"]),
            signal=str(data["signal"]),
            confidence=float(data["confidence"]),
            price=float(data["price"]),
            volume_ratio=_opt_float(data["volume_ratio"]),
            pc=_opt_float(data["pc"]),
            rsi=_opt_float(data["rsi"]),
            regime=str(data["regime"]),
            vix=_opt_float(data["vix"]),
            bar_start=int(data["bar_start"]),
            event_time=int(data["event_time"]),
            stop_loss=_opt_float(data["stop_loss"]),
        )

    def to_public(self) -> dict[str, Any]:
        """The published form: times as ISO 8601 with +05:30, numbers as numbers, a
        missing value as ``None`` (JSON null)."""
        out = asdict(self)
        out["bar_start"] = iso_from_epoch(self.bar_start)
        out["event_time"] = iso_from_epoch(self.event_time)
        return {name: out[name] for name in ALERT_FIELDS}

    def to_json(self) -> str:
        """The ``alerts:live`` message: :meth:`to_public` as compact JSON."""
        return json.dumps(self.to_public(), separators=(",", ":"))

    def to_redis(self) -> dict[str, str]:
        """Field -> string for the ``alerts`` stream: numbers as ``str`` (shortest
        round-tripping repr), a missing value as ``""``, times as in :meth:`to_public`."""
        return {
            name: "" if value is None else str(value) for name, value in self.to_public().items()
        }


def alert_id(token: int, pattern: str, signal: str, bar_start: int) -> str:
    """Deterministic: a replay of the same bar yields the same id, which the sink dedups."""
    return f"{token}:{pattern}:{signal}:{bar_start}"


def stop_loss(price: float, signal: str, atr: float | None, config: PatternConfig) -> float | None:
    """Entry -/+ ``stop_atr_multiple`` x ATR(14) for BUY/SELL, the distance capped at
    ``stop_max_pct`` percent of the price: on a bar after a huge range, 1.5 ATR can exceed
    what any intraday stop means. No usable ATR (missing, non-finite, not positive):
    ``None``, never a stop at the entry price."""
    if atr is None or not math.isfinite(atr) or atr <= 0:
        return None
    distance = min(config.stop_atr_multiple * atr, price * config.stop_max_pct / 100.0)
    level = price - distance if signal == BUY else price + distance
    return round(level, _STOP_DECIMALS)


# --------------------------------------------------------------------------------------
# conditions and confidence

_OPS: Mapping[str, Callable[[float, float], bool]] = MappingProxyType(
    {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
)


@dataclass(frozen=True, slots=True)
class Condition:
    """One comparison of a rule, e.g. ``r >= T``, with the numbers it compared.

    ``branch`` is the signal this condition belongs to (a pattern with two directions has
    one set per signal) or ``None`` when it applies to every signal of the pattern. A
    missing value (or threshold) fails the condition.
    """

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    branch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cmp(
    lhs: str,
    value: float | None,
    op: str,
    rhs: str,
    threshold: float | None,
    branch: str | None = None,
) -> Condition:
    passed = value is not None and threshold is not None and _OPS[op](value, threshold)
    return Condition(f"{lhs} {op} {rhs}", value, threshold, passed, branch)


def _verdict(conditions: tuple[Condition, ...]) -> str | None:
    """The first signal whose own conditions all pass, if the shared ones all pass."""
    if not all(c.passed for c in conditions if c.branch is None):
        return None
    branches = dict.fromkeys(c.branch for c in conditions if c.branch is not None)
    for branch in branches:
        if all(c.passed for c in conditions if c.branch == branch):
            return branch
    return None


def _over(value: float, threshold: float) -> float:
    """Clearance of a lower bound (value >= threshold): value as a multiple of it."""
    return abs(value) / threshold


def _under(value: float, bound: float) -> float:
    """Clearance of an upper bound (value < bound): how many times below it (0: infinite)."""
    return math.inf if value == 0 else bound / abs(value)


def _level(clearance: float) -> int:
    """How many of the steps 1.5x, 2x, 3x a clearance reaches (0 at 1x up to 1.5x).

    Rounded to 9 decimals first, so that exactly 1.5x in decimal (3.3 / 2.2) counts as
    1.5x despite binary noise."""
    x = round(clearance, 9)
    return sum(1 for step in CONFIDENCE_STEPS if x >= step)


def confidence(volume_clearance: float, price_clearance: float) -> float:
    """``0.10 + 0.85 x (Lr + Lp) / 6``, rounded to 3 decimals.

    ``Lr`` and ``Lp`` are the steps (see :func:`_level`: 0 to 3) reached by how far the
    volume ratio and the price move clear their thresholds, as multiples of them (for an
    upper bound such as ``abs(pc) < 0.1``, how many times below it). Both just at their
    thresholds: 0.10; both at 3x or more: 0.95; each step of either adds 0.85/6 (about
    0.142), so the values are 0.10, 0.242, 0.383, 0.525, 0.667, 0.808, 0.95. Volume and
    price weigh the same because the spec names both and ranks neither.
    """
    steps = _level(volume_clearance) + _level(price_clearance)
    span = CONFIDENCE_MAX - CONFIDENCE_MIN
    value = CONFIDENCE_MIN + span * steps / (2 * len(CONFIDENCE_STEPS))
    return round(min(max(value, CONFIDENCE_MIN), CONFIDENCE_MAX), _CONFIDENCE_DECIMALS)


# --------------------------------------------------------------------------------------
# the eight rules


@dataclass(frozen=True, slots=True)
class BarContext:
    """Everything a rule reads about one bar, computed once per bar."""

    bar: Bar
    r: float | None
    pc: float | None
    rsi: float | None
    regime: str
    m: float
    config: PatternConfig
    prev_highs: tuple[float, ...]  # the earlier bars of the breakout window (<= lookback)
    prev_lows: tuple[float, ...]
    closes: tuple[float, ...]  # up to the last five closes, the current one last

    def t(self, pattern: str) -> float:
        return self.config.volume_threshold(pattern, self.regime)

    def pm(self, threshold: float) -> float:
        """A price threshold scaled by the regime's m (10 decimals, see module)."""
        return round(threshold * self.m, _THRESHOLD_DECIMALS)

    @property
    def abs_pc(self) -> float | None:
        return None if self.pc is None else abs(self.pc)


@dataclass(frozen=True, slots=True)
class PatternCheck:
    """A rule's verdict on one bar, before cooldown: the signal it gives (or ``None``),
    its confidence, the inputs it read and every condition with passed/failed."""

    pattern: str
    inputs: Mapping[str, float | None]
    conditions: tuple[Condition, ...]
    signal: str | None
    confidence: float | None


def _check(
    pattern: str,
    inputs: dict[str, float | None],
    conditions: tuple[Condition, ...],
    confidence_of: Callable[[str], float],
) -> PatternCheck:
    signal = _verdict(conditions)
    conf = None if signal is None else confidence_of(signal)
    return PatternCheck(pattern, MappingProxyType(inputs), conditions, signal, conf)


def volume_spike(c: BarContext) -> PatternCheck:
    """r >= T and abs(pc) >= 0.1 (no m: see module); signal = sign of pc.
    Confidence: r over T, abs(pc) over 0.1."""
    t, move = c.t(VOLUME_SPIKE), c.config.spike_min_move
    conditions = (
        _cmp("r", c.r, ">=", "T", t),
        _cmp("abs(pc)", c.abs_pc, ">=", "min_move", move),
        _cmp("pc", c.pc, ">", "0", 0.0, BUY),
        _cmp("pc", c.pc, "<", "0", 0.0, SELL),
    )
    return _check(
        VOLUME_SPIKE,
        {"r": c.r, "pc": c.pc, "T": t, "min_move": move},
        conditions,
        lambda _: confidence(_over(_f(c.r), t), _over(_f(c.pc), move)),
    )


def volume_breakout(c: BarContext) -> PatternCheck:
    """r >= T and abs(pc) > 0.3m; signal = sign of pc.
    Confidence: r over T, abs(pc) over 0.3m."""
    t, move = c.t(VOLUME_BREAKOUT), c.pm(c.config.volume_breakout_move)
    conditions = (
        _cmp("r", c.r, ">=", "T", t),
        _cmp("abs(pc)", c.abs_pc, ">", "move*m", move),
        _cmp("pc", c.pc, ">", "0", 0.0, BUY),
        _cmp("pc", c.pc, "<", "0", 0.0, SELL),
    )
    return _check(
        VOLUME_BREAKOUT,
        {"r": c.r, "pc": c.pc, "T": t, "m": c.m, "move*m": move},
        conditions,
        lambda _: confidence(_over(_f(c.r), t), _over(_f(c.pc), move)),
    )


def volume_price_divergence(c: BarContext) -> PatternCheck:
    """BUY (absorption): r >= T and pc < -0.5m. SELL (unconfirmed rise): r < 0.8 and
    pc > 0.5m (0.8 is a fixed ratio, not T).
    Confidence: BUY r over T; SELL how far r is below 0.8; both abs(pc) over 0.5m."""
    t, move = c.t(VOLUME_PRICE_DIVERGENCE), c.pm(c.config.divergence_move)
    low = c.config.divergence_low_ratio
    conditions = (
        _cmp("r", c.r, ">=", "T", t, BUY),
        _cmp("pc", c.pc, "<", "-move*m", -move, BUY),
        _cmp("r", c.r, "<", "low_ratio", low, SELL),
        _cmp("pc", c.pc, ">", "move*m", move, SELL),
    )

    def conf(signal: str) -> float:
        volume = _over(_f(c.r), t) if signal == BUY else _under(_f(c.r), low)
        return confidence(volume, _over(_f(c.pc), move))

    inputs = {"r": c.r, "pc": c.pc, "T": t, "m": c.m, "move*m": move, "low_ratio": low}
    return _check(VOLUME_PRICE_DIVERGENCE, inputs, conditions, conf)


def upside_momentum(c: BarContext) -> PatternCheck:
    """BUY: pc > 0.5m and r >= T and RSI < 70.
    Confidence: r over T, pc over 0.5m."""
    t, move = c.t(UPSIDE_MOMENTUM), c.pm(c.config.momentum_move)
    rsi_max = c.config.momentum_rsi_max
    conditions = (
        _cmp("pc", c.pc, ">", "move*m", move, BUY),
        _cmp("r", c.r, ">=", "T", t, BUY),
        _cmp("RSI", c.rsi, "<", "rsi_max", rsi_max, BUY),
    )
    inputs = {"r": c.r, "pc": c.pc, "rsi": c.rsi, "T": t, "m": c.m, "move*m": move}
    return _check(
        UPSIDE_MOMENTUM,
        inputs,
        conditions,
        lambda _: confidence(_over(_f(c.r), t), _over(_f(c.pc), move)),
    )


def downside_momentum(c: BarContext) -> PatternCheck:
    """SELL: pc < -0.5m and r >= T and RSI > 30.
    Confidence: r over T, abs(pc) over 0.5m."""
    t, move = c.t(DOWNSIDE_MOMENTUM), c.pm(c.config.momentum_move)
    rsi_min = c.config.momentum_rsi_min
    conditions = (
        _cmp("pc", c.pc, "<", "-move*m", -move, SELL),
        _cmp("r", c.r, ">=", "T", t, SELL),
        _cmp("RSI", c.rsi, ">", "rsi_min", rsi_min, SELL),
    )
    inputs = {"r": c.r, "pc": c.pc, "rsi": c.rsi, "T": t, "m": c.m, "move*m": move}
    return _check(
        DOWNSIDE_MOMENTUM,
        inputs,
        conditions,
        lambda _: confidence(_over(_f(c.r), t), _over(_f(c.pc), move)),
    )


def breakout(c: BarContext) -> PatternCheck:
    """BUY: close > the highest high of the previous ``lookback`` (20) bars; SELL: close
    < their lowest low; both with abs(pc) > 0.3m, r >= T and 30 <= RSI <= 70, and only
    with a full window of earlier bars.
    Confidence: r over T, abs(pc) over 0.3m."""
    cfg = c.config
    t, move = c.t(BREAKOUT), c.pm(cfg.breakout_move)
    full = len(c.prev_highs) >= cfg.breakout_lookback
    high = max(c.prev_highs) if full else None
    low = min(c.prev_lows) if full else None
    close = c.bar.close
    conditions = (
        _cmp(
            "earlier bars", float(len(c.prev_highs)), ">=", "lookback", float(cfg.breakout_lookback)
        ),
        _cmp("abs(pc)", c.abs_pc, ">", "move*m", move),
        _cmp("r", c.r, ">=", "T", t),
        _cmp("RSI", c.rsi, ">=", "rsi_min", cfg.breakout_rsi_min),
        _cmp("RSI", c.rsi, "<=", "rsi_max", cfg.breakout_rsi_max),
        _cmp("close", close, ">", "highest_high", high, BUY),
        _cmp("close", close, "<", "lowest_low", low, SELL),
    )
    inputs = {
        "r": c.r,
        "pc": c.pc,
        "rsi": c.rsi,
        "close": close,
        "highest_high": high,
        "lowest_low": low,
        "T": t,
        "m": c.m,
        "move*m": move,
    }
    return _check(
        BREAKOUT,
        inputs,
        conditions,
        lambda _: confidence(_over(_f(c.r), t), _over(_f(c.pc), move)),
    )


def reversal(c: BarContext) -> PatternCheck:
    """p0..p4 the last five closes (p4 this bar's); legs in percent. SELL: (p2-p0)/p0 >
    0.4m and (p4-p2)/p2 < -0.2m; BUY: the mirror (< -0.4m, then > 0.2m); both r >= T.
    Confidence: r over T; the price clearance is the weaker leg's (each leg's move over
    its own threshold), as a turn is only as clear as its smaller swing."""
    cfg = c.config
    t = c.t(REVERSAL)
    first, second = c.pm(cfg.reversal_first_leg), c.pm(cfg.reversal_second_leg)
    leg1 = leg2 = None
    if len(c.closes) >= REVERSAL_CLOSES:
        p0, _, p2, _, p4 = c.closes[-REVERSAL_CLOSES:]
        leg1, leg2 = _percent(p2, p0), _percent(p4, p2)
    conditions = (
        _cmp("closes", float(len(c.closes)), ">=", "5", float(REVERSAL_CLOSES)),
        _cmp("r", c.r, ">=", "T", t),
        _cmp("leg1", leg1, ">", "first*m", first, SELL),
        _cmp("leg2", leg2, "<", "-second*m", -second, SELL),
        _cmp("leg1", leg1, "<", "-first*m", -first, BUY),
        _cmp("leg2", leg2, ">", "second*m", second, BUY),
    )

    def conf(_: str) -> float:
        price = min(_over(_f(leg1), first), _over(_f(leg2), second))
        return confidence(_over(_f(c.r), t), price)

    inputs = {
        "r": c.r,
        "leg1": leg1,
        "leg2": leg2,
        "T": t,
        "m": c.m,
        "first*m": first,
        "second*m": second,
    }
    return _check(REVERSAL, inputs, conditions, conf)


def hidden_accumulation(c: BarContext) -> PatternCheck:
    """BUY: T <= r < 2.0 and 45 < RSI < 65 and abs(pc) < 0.1 (no m: see module).
    Confidence: r over T; how far abs(pc) is below 0.1 (a still price scores high)."""
    cfg = c.config
    t, still = c.t(HIDDEN_ACCUMULATION), cfg.hidden_max_move
    conditions = (
        _cmp("r", c.r, ">=", "T", t, BUY),
        _cmp("r", c.r, "<", "max_ratio", cfg.hidden_max_ratio, BUY),
        _cmp("RSI", c.rsi, ">", "rsi_min", cfg.hidden_rsi_min, BUY),
        _cmp("RSI", c.rsi, "<", "rsi_max", cfg.hidden_rsi_max, BUY),
        _cmp("abs(pc)", c.abs_pc, "<", "max_move", still, BUY),
    )
    inputs = {"r": c.r, "pc": c.pc, "rsi": c.rsi, "T": t, "max_move": still}
    return _check(
        HIDDEN_ACCUMULATION,
        inputs,
        conditions,
        lambda _: confidence(_over(_f(c.r), t), _under(_f(c.pc), still)),
    )


#: The rules in the spec's order; evaluate and explain run exactly these.
RULES: tuple[Callable[[BarContext], PatternCheck], ...] = (
    volume_spike,
    volume_breakout,
    volume_price_divergence,
    upside_momentum,
    downside_momentum,
    breakout,
    reversal,
    hidden_accumulation,
)


def _f(value: float | None) -> float:
    """A value a passed condition has already proved present."""
    assert value is not None
    return value


def _percent(new: float, old: float) -> float | None:
    """(new - old) / old in percent, 6 decimals; None without a usable base."""
    if not (math.isfinite(old) and old > 0):
        return None
    return round((new - old) / old * 100.0, _PC_DECIMALS)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _opt_float(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


# --------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True, slots=True)
class PatternResult:
    """The alerts of one bar, and the ids of those the cooldown held back (for metrics
    and the debug command)."""

    alerts: tuple[Alert, ...]
    suppressed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Assessment:
    context: BarContext
    regime_assumed: bool
    vix: float | None
    atr: float | None
    redelivered: bool
    checks: tuple[PatternCheck, ...]
    blocked: tuple[str | None, ...]  # per check: why a verdict does not alert, or None


def _assess(
    state: PatternState,
    bar: Bar,
    *,
    volume_ratio: float | None,
    rsi: float | None,
    atr: float | None,
    regime: str | None,
    vix: float | None,
    config: PatternConfig,
) -> _Assessment:
    """Run every rule on ``bar`` against ``state`` without changing it."""
    if regime is None:
        effective, assumed = DEFAULT_REGIME, True
    else:
        effective, assumed = regime.strip().upper(), False
        if effective not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; expected one of {REGIMES}")
    if not (math.isfinite(bar.high) and math.isfinite(bar.low) and math.isfinite(bar.close)):
        raise ValueError(f"bar with a non-finite price: {bar!r}")
    redelivered = state.last_bar_start is not None and bar.start <= state.last_bar_start

    window = state.bars[-config.breakout_lookback :]
    previous_closes = [close for _, _, close in state.bars[-(REVERSAL_CLOSES - 1) :]]
    pc = _percent(bar.close, previous_closes[-1]) if previous_closes else None
    context = BarContext(
        bar=bar,
        r=_finite(volume_ratio),
        pc=pc,
        rsi=_finite(rsi),
        regime=effective,
        m=config.price_multiplier(effective),
        config=config,
        prev_highs=tuple(high for high, _, _ in window),
        prev_lows=tuple(low for _, low, _ in window),
        closes=(*previous_closes, float(bar.close)),
    )
    checks = tuple(rule(context) for rule in RULES)
    event_time = bar.start + BAR_SECONDS
    blocked: list[str | None] = []
    for check in checks:
        if check.signal is None:
            blocked.append(None)
        elif redelivered:
            blocked.append("redelivered")
        elif bar.flat:
            blocked.append("flat bar")
        else:
            last = state.cooldowns.get(f"{check.pattern}:{check.signal}")
            cooling = last is not None and event_time - last < config.cooldown
            blocked.append("cooldown" if cooling else None)
    return _Assessment(
        context=context,
        regime_assumed=assumed,
        vix=_finite(vix),
        atr=_finite(atr),
        redelivered=redelivered,
        checks=checks,
        blocked=tuple(blocked),
    )


def evaluate(
    state: PatternState,
    bar: Bar,
    *,
    volume_ratio: float | None,
    rsi: float | None,
    atr: float | None,
    regime: str | None,
    vix: float | None,
    config: PatternConfig,
    symbol: str = "",
    exchange: str = "",
) -> PatternResult | None:
    """Apply one closed bar to ``state`` (in place) and return its alerts.

    Inputs are this bar's: ``volume_ratio`` (the published, capped ratio), ``rsi``
    (RSI(14)) and ``atr`` (ATR(14)) after this bar, each ``None`` when not available yet;
    the ``regime`` string and ``vix`` value current at the bar (``None`` before any VIX
    tick: NORMAL is assumed). ``symbol`` and ``exchange`` only label the alerts.

    Returns ``None``, leaving ``state`` untouched, for a bar that does not start after the
    last one evaluated. Raises ``ValueError`` for an unknown regime or a bar with a
    non-finite price, the state then unchanged, so the agent can count it and go on.
    """
    assessment = _assess(
        state,
        bar,
        volume_ratio=volume_ratio,
        rsi=rsi,
        atr=atr,
        regime=regime,
        vix=vix,
        config=config,
    )
    if assessment.redelivered:
        return None
    context = assessment.context
    event_time = bar.start + BAR_SECONDS
    alerts: list[Alert] = []
    suppressed: list[str] = []
    for check, blocked in zip(assessment.checks, assessment.blocked, strict=True):
        if check.signal is None or blocked == "flat bar":
            continue
        identity = alert_id(bar.instrument_token, check.pattern, check.signal, bar.start)
        if blocked is not None:
            suppressed.append(identity)
            continue
        state.cooldowns[f"{check.pattern}:{check.signal}"] = event_time
        alerts.append(
            Alert(
                id=identity,
                token=bar.instrument_token,
                symbol=symbol,
                exchange=exchange,
                pattern=check.pattern,
                signal=check.signal,
                confidence=_f(check.confidence),
                price=float(bar.close),
                volume_ratio=context.r,
                pc=context.pc,
                rsi=context.rsi,
                regime=context.regime,
                vix=assessment.vix,
                bar_start=bar.start,
                event_time=event_time,
                stop_loss=stop_loss(bar.close, check.signal, assessment.atr, config),
            )
        )

    state.last_bar_start = bar.start
    state.bars.append((float(bar.high), float(bar.low), float(bar.close)))
    del state.bars[: -config.history_bars]
    expired = [k for k, t in state.cooldowns.items() if event_time - t >= config.cooldown]
    for key in expired:
        del state.cooldowns[key]
    return PatternResult(alerts=tuple(alerts), suppressed=tuple(suppressed))


def explain(
    state: PatternState,
    bar: Bar,
    *,
    volume_ratio: float | None,
    rsi: float | None,
    atr: float | None,
    regime: str | None,
    vix: float | None,
    config: PatternConfig,
) -> dict[str, Any]:
    """What :func:`evaluate` would decide for ``bar``, and why; ``state`` is not changed.

    JSON-ready: the bar-level inputs, then per pattern (in the spec's order) the inputs
    its rule read, every condition with value, threshold and passed, the rule's
    ``signal`` and ``confidence`` (before cooldown), ``blocked_by`` (``"cooldown"``,
    ``"flat bar"``, ``"redelivered"`` or ``None``) and ``alerts``: whether evaluate emits
    an alert for it. For a redelivered bar the conditions are computed against the state
    as given (which already holds the bar), and nothing alerts.
    """
    a = _assess(
        state,
        bar,
        volume_ratio=volume_ratio,
        rsi=rsi,
        atr=atr,
        regime=regime,
        vix=vix,
        config=config,
    )
    c = a.context
    patterns: dict[str, Any] = {}
    for check, blocked in zip(a.checks, a.blocked, strict=True):
        patterns[check.pattern] = {
            "inputs": dict(check.inputs),
            "conditions": [condition.to_dict() for condition in check.conditions],
            "signal": check.signal,
            "confidence": check.confidence,
            "blocked_by": blocked,
            "alerts": check.signal is not None and blocked is None,
        }
    return {
        "token": bar.instrument_token,
        "bar_start": iso_from_epoch(bar.start),
        "event_time": iso_from_epoch(bar.start + BAR_SECONDS),
        "redelivered": a.redelivered,
        "flat_bar": bar.flat,
        "inputs": {
            "close": bar.close,
            "previous_close": c.closes[-2] if len(c.closes) > 1 else None,
            "r": c.r,
            "pc": c.pc,
            "rsi": c.rsi,
            "atr": a.atr,
            "regime": c.regime,
            "regime_assumed": a.regime_assumed,
            "vix": a.vix,
            "m": c.m,
            "earlier_bars": len(state.bars),
            "closes": list(c.closes),
        },
        "cooldowns": {
            key: {"last_alert": iso_from_epoch(t), "until": iso_from_epoch(t + config.cooldown)}
            for key, t in sorted(state.cooldowns.items())
        },
        "patterns": patterns,
    }
