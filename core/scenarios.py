"""Labelled market episodes for the simulator: each one makes exactly one pattern fire.

The pattern stage (``core.patterns``) can only be judged end to end against a market
whose answers are known. This module turns a list of :class:`Episode` (token, kind,
target minute) into a per-minute *plan* of a token's path: the close of every minute as
a factor of the price at the episode's start, an optional wick, and the minute's volume,
sized from the token's baseline so that the trailing volume ratio the worker computes
(analytics-spec section 1: volume of the last W bars over the baseline of the same
slots) takes the value the episode needs. :class:`core.market_simulator.MarketSimulator`
plays a plan as real trades; here everything is pure and deterministic.

**Why a scripted path and not a nudge of the random walk.** The rules compare one bar's
pc and the trailing ratio against thresholds with little room between them (a volume
spike must not also be a volume breakout: 2.2 <= r, 0.1 <= abs(pc) <= 0.3), and they read
RSI(14), the last five closes and the 20-bar range. Only a path whose closes and volumes
are set minute by minute makes "exactly this pattern, on this bar" a guarantee rather than
a likelihood. Each episode is:

* a **lead-in** (``lead_in`` minutes, 22 by default, the template's own "pre" minutes at
  its end): a zigzag of ``zigzag`` percent between two levels at the baseline volume
  (r = 1). It fills the breakout window (20 bars) with a known range and dominates
  Wilder's RSI (the weight of what came before decays as (13/14)^22 = 0.2), so the
  target bar's RSI does not depend on the unknown history;
* the **target** minute, the one bar whose close and volume trip the rule;
* a **tail** of 6 minutes at the target's close (pc = 0) whose volumes hold the trailing
  ratio out of the band where a still price alerts (hidden accumulation: 1.6 <= r < 2.0)
  while the target's volume is still inside the trailing window, then bring it back
  to 1.

**Ground truth** is not asserted by hand: :func:`plan_episode` runs the eight rules
(``core.patterns.evaluate``, the configured thresholds and regime) over the planned bars,
three times, after three different made-up histories (rising, falling, flat), and
requires the same alerts each time: the intended pattern on the target bar, nothing else
anywhere in the window except companions a rule implies (every breakout bar is by the
spec's table also a volume breakout). Those alerts, with their deterministic ids, are the
labels (:func:`ground_truth`). A plan that fails this check is a :class:`ScenarioError`
at start-up, never a silently wrong label.

**Quiet stretches** (``kind = "quiet"``) label a window in which no alert may fire:
scripted (a half-size zigzag at the baseline volume) or ``shape = "natural"``, the
simulator's own random market left alone.

The scenario file (JSON; see :func:`parse_scenario`)::

    {"date": "2026-11-24", "regime": "NORMAL",
     "episodes": [
       {"token": 738561, "kind": "volume_spike", "signal": "BUY", "at": "10:23"},
       {"symbol": "NSE:INFY", "kind": "breakout", "signal": "down", "at": "10:23"},
       {"token": 2953217, "kind": "quiet", "at": "10:01", "minutes": 28}]}

``at`` is the target bar's start (a quiet stretch's first minute): ``HH:MM`` on ``date``
(else the simulation's start date) or ISO 8601 (naive = IST).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from fractions import Fraction
from pathlib import Path
from typing import Any

from core.bars import Bar
from core.indicators import IndicatorState
from core.patterns import (
    BREAKOUT,
    BUY,
    DEFAULT_REGIME,
    DOWNSIDE_MOMENTUM,
    HIDDEN_ACCUMULATION,
    PATTERNS,
    REGIMES,
    REVERSAL,
    SELL,
    UPSIDE_MOMENTUM,
    VOLUME_BREAKOUT,
    VOLUME_PRICE_DIVERGENCE,
    VOLUME_SPIKE,
    PatternConfig,
    PatternState,
    alert_id,
    evaluate,
)
from core.sessions import MINUTE_S, slot_of
from core.timeutil import IST, iso_from_epoch

QUIET = "quiet"
#: Episode kinds: the eight patterns and the quiet stretch.
KINDS: tuple[str, ...] = (*PATTERNS, QUIET)
#: Short names accepted in scenario files.
KIND_ALIASES: Mapping[str, str] = {"divergence": VOLUME_PRICE_DIVERGENCE, "spike": VOLUME_SPIKE}
#: Kinds with one possible signal; the others take ``signal`` (default BUY).
_FIXED_SIGNAL: Mapping[str, str] = {
    UPSIDE_MOMENTUM: BUY,
    DOWNSIDE_MOMENTUM: SELL,
    HIDDEN_ACCUMULATION: BUY,
}
_SIGNAL_WORDS: Mapping[str, str] = {"BUY": BUY, "UP": BUY, "SELL": SELL, "DOWN": SELL}
#: Other alerts a kind may produce on its target bar because the rules imply them.
COMPANIONS: Mapping[str, tuple[str, ...]] = {BREAKOUT: (VOLUME_BREAKOUT,)}

DEFAULT_LEAD_IN = 22
DEFAULT_ZIGZAG = 0.2  # percent
#: Minutes after the target: four holding the trailing ratio, two bringing it back.
TAIL_HOLD = 4
TAIL_RELEASE = 2
#: Prints per scripted minute, at these seconds; a wick print goes at :30.
PRINT_SECONDS: tuple[int, ...] = (5, 15, 25, 35, 45, 55)
WICK_SECOND = 30
#: Price grid steps a scripted path needs at least (1 tick = 0.02%): finer moves than
#: this cannot be placed on a coarse grid (a Rs 50 stock moves 0.1% per tick).
MIN_PRICE_TICKS = 5000
LABELS_FORMAT = "tickflow-scenario-labels/1"


class ScenarioError(ValueError):
    """A scenario that cannot be played as labelled (bad file, impossible plan)."""


@dataclass(frozen=True, slots=True)
class Episode:
    """One labelled episode: ``at`` is the target bar's start (epoch seconds), or the
    first minute of a quiet stretch of ``minutes`` minutes."""

    token: int
    kind: str
    at: int
    signal: str | None = None
    minutes: int = 0
    shape: str = "scripted"  # quiet stretches only: "scripted" or "natural"
    name: str = ""

    @property
    def scripted(self) -> bool:
        return self.shape == "scripted"


@dataclass(frozen=True, slots=True)
class Scenario:
    """Episodes and the rule set they are designed against.

    ``config``/``regime``/``volume_window`` must be the worker's (the labels are what
    these rules say); the e2e run has no VIX feed, so the worker assumes NORMAL.
    """

    episodes: tuple[Episode, ...]
    config: PatternConfig = field(default_factory=PatternConfig)
    regime: str = DEFAULT_REGIME
    volume_window: int = 5
    lead_in: int = DEFAULT_LEAD_IN
    zigzag: float = DEFAULT_ZIGZAG

    def __post_init__(self) -> None:
        regime = self.regime.strip().upper()
        if regime not in REGIMES:
            raise ScenarioError(f"unknown regime {self.regime!r}; expected one of {REGIMES}")
        object.__setattr__(self, "regime", regime)
        if self.lead_in < 6:
            raise ScenarioError(f"lead_in must be at least 6 minutes, got {self.lead_in}")
        if not 0 < self.zigzag < 1:
            raise ScenarioError(f"zigzag must be in (0, 1) percent, got {self.zigzag}")
        if self.volume_window < 1:
            raise ScenarioError(f"volume_window must be >= 1, got {self.volume_window}")

    @property
    def tokens(self) -> list[int]:
        return list(dict.fromkeys(e.token for e in self.episodes))


# --------------------------------------------------------------------------------------
# the file


def _parse_time(value: Any, day: date | None, where: str) -> int:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{where}: 'at' must be HH:MM or an ISO 8601 time, got {value!r}")
    text = value.strip()
    try:
        if len(text) <= 5 and ":" in text:
            if day is None:
                raise ScenarioError(f"{where}: 'at' {text!r} needs a date (file 'date')")
            when = datetime.combine(day, time.fromisoformat(text.zfill(5)), tzinfo=IST)
        else:
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=IST)
    except ValueError as exc:
        raise ScenarioError(f"{where}: bad time {text!r}: {exc}") from None
    if when.second or when.microsecond:
        raise ScenarioError(f"{where}: 'at' {text!r} is not on a minute")
    return int(when.timestamp())


def _signal(kind: str, raw: Any, where: str) -> str | None:
    if kind == QUIET:
        return None
    fixed = _FIXED_SIGNAL.get(kind)
    if raw is None:
        return fixed or BUY
    signal = _SIGNAL_WORDS.get(str(raw).strip().upper())
    if signal is None:
        raise ScenarioError(f"{where}: signal must be BUY/SELL (or up/down), got {raw!r}")
    if fixed is not None and signal != fixed:
        raise ScenarioError(f"{where}: {kind} only signals {fixed}")
    return signal


def parse_scenario(
    data: Mapping[str, Any],
    *,
    default_date: date | None = None,
    resolve_symbol: Callable[[str, str], int | None] | None = None,
    config: PatternConfig | None = None,
    volume_window: int = 5,
) -> Scenario:
    """A :class:`Scenario` from the decoded scenario file (see the module docstring).

    ``resolve_symbol(exchange, tradingsymbol)`` resolves ``"symbol": "NSE:INFY"``;
    ``config`` and ``volume_window`` are the worker's rules. Raises
    :class:`ScenarioError` naming the episode at fault.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("episodes"), list):
        raise ScenarioError('a scenario is {"episodes": [...]} (JSON object)')
    day = default_date
    if data.get("date") is not None:
        try:
            day = date.fromisoformat(str(data["date"]))
        except ValueError as exc:
            raise ScenarioError(f"bad 'date': {exc}") from None
    episodes: list[Episode] = []
    for n, raw in enumerate(data["episodes"], start=1):
        where = f"episode {n}"
        if not isinstance(raw, Mapping):
            raise ScenarioError(f"{where}: not an object")
        kind = str(raw.get("kind", "")).strip().lower()
        kind = KIND_ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise ScenarioError(f"{where}: unknown kind {raw.get('kind')!r}; one of {KINDS}")
        token = raw.get("token")
        if token is None and raw.get("symbol") is not None:
            exchange, _, symbol = str(raw["symbol"]).partition(":")
            if not symbol or resolve_symbol is None:
                raise ScenarioError(f"{where}: symbol {raw['symbol']!r} cannot be resolved")
            token = resolve_symbol(exchange.upper(), symbol)
            if token is None:
                raise ScenarioError(f"{where}: {raw['symbol']} is not in the instrument master")
        if isinstance(token, bool) or not isinstance(token, int) or token <= 0:
            raise ScenarioError(f"{where}: 'token' must be a positive integer, got {token!r}")
        minutes = raw.get("minutes", 0)
        shape = str(raw.get("shape", "scripted")).strip().lower()
        if kind == QUIET:
            if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
                raise ScenarioError(f"{where}: a quiet stretch needs 'minutes' >= 1")
            if shape not in ("scripted", "natural"):
                raise ScenarioError(f"{where}: shape must be 'scripted' or 'natural'")
        elif shape != "scripted" or minutes:
            raise ScenarioError(f"{where}: 'minutes' and 'shape' are for quiet stretches")
        episodes.append(
            Episode(
                token=token,
                kind=kind,
                at=_parse_time(raw.get("at"), day, where),
                signal=_signal(kind, raw.get("signal"), where),
                minutes=minutes,
                shape=shape,
                name=str(raw.get("name") or f"{n}:{kind}"),
            )
        )
    return Scenario(
        episodes=tuple(episodes),
        config=config or PatternConfig(),
        regime=str(data.get("regime") or DEFAULT_REGIME),
        volume_window=volume_window,
        lead_in=int(data.get("lead_in", DEFAULT_LEAD_IN)),
        zigzag=float(data.get("zigzag", DEFAULT_ZIGZAG)),
    )


def load_scenario(path: Path | str, **options: Any) -> Scenario:
    """:func:`parse_scenario` of a JSON file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc}") from None
    return parse_scenario(data, **options)


# --------------------------------------------------------------------------------------
# templates: the minutes of an episode as moves and ratio targets


@dataclass(frozen=True, slots=True)
class _Step:
    """One planned minute before volumes are sized: ``move`` is the close's percent
    change over the previous close (``None``: the next zigzag level), ``ratio`` the
    trailing volume ratio to reach, ``wick`` an extra print at this percent off the
    episode's base level."""

    move: float | None
    ratio: float
    wick: float | None = None
    level: float | None = None  # an absolute zigzag level (factor of the base)


@dataclass(frozen=True, slots=True)
class _Template:
    zig_end: int  # parity of the last zigzag level: 0 at the base, 1 a zigzag above
    pre: tuple[_Step, ...]
    target: _Step
    wick_before: int = 0  # a wick goes on this many minutes before the target...
    wick: float = 0.0  # ...this percent off the base level


def _mid(low: float, high: float) -> float:
    return round((low + high) / 2.0, 6)


def _template(episode: Episode, scenario: Scenario) -> _Template:
    """The moves and ratios of one kind, from the configured thresholds (in NORMAL:
    spike r 2.64 pc 0.2; breakouts r 2.0 pc 0.4; reversal legs 0.5 and 0.3 at r 1.7;
    divergence BUY pc -0.6 r 1.65 after a slide that takes RSI under 30, SELL pc 0.6 at
    r 0.6; hidden accumulation r 1.8 pc 0.04; momentum pc 0.65 r 1.4 after a short
    counter-move that keeps RSI well inside its bound). Each value sits between the
    threshold it must clear and the next rule's, with margins the plan check proves."""
    cfg, regime = scenario.config, scenario.regime
    m = cfg.price_multiplier(regime)

    def t(pattern: str) -> float:
        return cfg.volume_threshold(pattern, regime)

    s = 1.0 if episode.signal != SELL else -1.0
    kind = episode.kind
    zig = scenario.zigzag
    breakout_move = _mid(cfg.volume_breakout_move * m, cfg.momentum_move * m)
    if kind == VOLUME_SPIKE:
        move = _mid(cfg.spike_min_move, cfg.volume_breakout_move * m)
        target = _Step(s * move, round(t(VOLUME_SPIKE) * 1.2, 6))
        return _Template(0 if s > 0 else 1, (), target)
    if kind == VOLUME_BREAKOUT:
        ratio = _mid(t(VOLUME_BREAKOUT), t(VOLUME_SPIKE))
        # A wick beyond the target's close keeps the 20-bar level out of reach: the move
        # is a volume breakout, not a range breakout.
        wick = s * (3 * zig + 2 * breakout_move)
        target = _Step(s * breakout_move, ratio)
        return _Template(0 if s > 0 else 1, (), target, wick_before=8, wick=wick)
    if kind == BREAKOUT:
        ratio = _mid(max(t(BREAKOUT), t(VOLUME_BREAKOUT)), t(VOLUME_SPIKE))
        return _Template(0 if s > 0 else 1, (), _Step(s * breakout_move, ratio))
    if kind == REVERSAL:
        first = 1.25 * cfg.reversal_first_leg * m / 2  # two bars of leg 1
        second = 1.5 * cfg.reversal_second_leg * m / 2  # two bars of leg 2
        ratio = _mid(t(REVERSAL), min(t(VOLUME_BREAKOUT), t(VOLUME_SPIKE)))
        # SELL: up then down; BUY: the mirror (s is -1 for SELL).
        pre = (_Step(-s * first, 1.0), _Step(-s * first, 1.0), _Step(s * second, 1.0))
        return _Template(0, pre, _Step(s * second, ratio))
    if kind == VOLUME_PRICE_DIVERGENCE:
        move = cfg.divergence_move * m + 0.1
        if s > 0:  # absorption: a heavy drop into an oversold RSI (no downside momentum)
            ratio = _mid(t(VOLUME_PRICE_DIVERGENCE), min(t(VOLUME_BREAKOUT), t(VOLUME_SPIKE)))
            slide = tuple(_Step(-0.12 * m, 1.0) for _ in range(14))
            return _Template(1, slide, _Step(-move, ratio))
        low = round(cfg.divergence_low_ratio * 0.75, 6)  # an unconfirmed rise: thin volume
        thin = tuple(_Step(None, low) for _ in range(scenario.volume_window - 1))
        return _Template(0, thin, _Step(move, low))
    if kind == HIDDEN_ACCUMULATION:
        ratio = _mid(t(HIDDEN_ACCUMULATION), cfg.hidden_max_ratio)
        return _Template(1, (), _Step(round(cfg.hidden_max_move * 0.4, 6), ratio))
    if kind in (UPSIDE_MOMENTUM, DOWNSIDE_MOMENTUM):
        ratio = _mid(t(kind), min(t(VOLUME_PRICE_DIVERGENCE), t(REVERSAL), t(VOLUME_BREAKOUT)))
        counter = tuple(_Step(-s * 0.15 * m, 1.0) for _ in range(3))
        return _Template(
            0 if s > 0 else 1, counter, _Step(s * (cfg.momentum_move * m + 0.15), ratio)
        )
    raise ScenarioError(f"no template for {kind!r}")  # pragma: no cover - KINDS guards


def _steps(episode: Episode, scenario: Scenario) -> tuple[list[_Step], int | None]:
    """Every planned minute of an episode, and the index of its target minute."""
    zig = scenario.zigzag
    if episode.kind == QUIET:
        half = zig / 2
        steps = [_Step(None, 1.0, level=1 + half / 100 * (j % 2)) for j in range(episode.minutes)]
        return steps, None
    tpl = _template(episode, scenario)
    n_zig = scenario.lead_in - len(tpl.pre)
    if n_zig < 2:
        raise ScenarioError(f"{episode.name}: lead_in too short for a {episode.kind}")
    steps = [
        _Step(None, 1.0, level=1 + zig / 100 * ((tpl.zig_end + n_zig - 1 - j) % 2))
        for j in range(n_zig)
    ]
    parity = tpl.zig_end
    for step in tpl.pre:
        if step.move is None:  # the zigzag goes on (at the step's ratio)
            parity ^= 1
            steps.append(_Step(None, step.ratio, level=1 + zig / 100 * parity))
        else:
            steps.append(step)
    if tpl.wick_before:
        k = len(steps) - tpl.wick_before
        steps[k] = _Step(steps[k].move, steps[k].ratio, tpl.wick, steps[k].level)
    target_index = len(steps)
    steps.append(tpl.target)
    cfg = scenario.config
    hidden_low = cfg.volume_threshold(HIDDEN_ACCUMULATION, scenario.regime) - 0.1
    hidden_high = cfg.hidden_max_ratio + 0.1
    hold = tpl.target.ratio
    if episode.kind != HIDDEN_ACCUMULATION and hidden_low <= hold < hidden_high:
        hold = hidden_high  # a still price at 1.6 <= r < 2.0 is hidden accumulation
    steps += [_Step(0.0, hold) for _ in range(TAIL_HOLD)]
    steps += [_Step(0.0, 1.0) for _ in range(TAIL_RELEASE)]
    return steps, target_index


# --------------------------------------------------------------------------------------
# plans


@dataclass(frozen=True, slots=True)
class PlannedMinute:
    """One scripted minute: ``close`` and ``wick`` are factors of the episode's base
    price (the last price when the episode starts), ``volume`` the minute's shares."""

    start: int
    close: float
    wick: float | None
    ratio: float
    volume: int


@dataclass(frozen=True, slots=True)
class PlannedAlert:
    token: int
    pattern: str
    signal: str
    bar_start: int

    @property
    def id(self) -> str:
        return alert_id(self.token, self.pattern, self.signal, self.bar_start)


@dataclass(frozen=True, slots=True)
class EpisodePlan:
    """An episode's minutes (empty for a natural quiet stretch), its labelled window
    ``[window_start, window_end)`` (bar starts) and the alerts it must produce."""

    episode: Episode
    minutes: tuple[PlannedMinute, ...]
    window_start: int
    window_end: int
    target: int | None
    alerts: tuple[PlannedAlert, ...]


#: The expected volume (shares) of the minute starting at the given epoch second.
ExpectedVolume = Callable[[int], float]


def size_volumes(
    starts: Sequence[int],
    ratios: Sequence[float],
    segment: int,
    expected: ExpectedVolume,
    *,
    window: int,
    lot: int = 1,
    minimum: int = 1,
) -> list[int]:
    """Minute volumes whose trailing ratio (the worker's: volume of the in-session
    slots ``(slot - window, slot]`` over their expected volume) is each ratio target.

    A minute before ``starts`` is assumed to trade its expected volume. A target that
    would need less than ``minimum`` shares (the ratio cannot fall that fast while a big
    minute is still in the window) gets ``minimum``: the plan check then sees the ratio
    actually reached.
    """
    volumes: dict[int, float] = {}
    out: list[int] = []
    for start, ratio in zip(starts, ratios, strict=True):
        slot = slot_of(segment, start)
        if slot is None:
            raise ScenarioError(f"{iso_from_epoch(start)} is outside the token's session")
        first = start - (min(slot, window - 1)) * MINUTE_S
        earlier = range(first, start, MINUTE_S)
        denominator = sum(expected(s) for s in earlier) + expected(start)
        have = sum(volumes.get(s, expected(s)) for s in earlier)
        want = ratio * denominator - have
        shares = max(minimum, round(want / lot) * lot)
        volumes[start] = shares
        out.append(shares)
    return out


def _bars(
    token: int,
    minutes: Sequence[PlannedMinute],
    base_n: int,
    tick: float,
    previous_close_n: int,
) -> list[Bar]:
    """The bars the simulator's prints make (same interpolation as its script)."""
    bars: list[Bar] = []
    prev = previous_close_n
    for minute in minutes:
        prints = [n for _, n in minute_prints(minute, base_n, prev)]
        close = prints[-1]
        bars.append(
            Bar(token, minute.start, grid_price(prints[0], tick), grid_price(max(prints), tick),
                grid_price(min(prints), tick), grid_price(close, tick), minute.volume,
                len(prints))
        )  # fmt: skip
        prev = close
    return bars


def grid_price(n: int, tick: float) -> float:
    """Ticks -> price as the simulator computes it (``n * num / den`` of the tick as an
    exact fraction: 2001 * 0.05 would give 100.05000000000001)."""
    frac = Fraction(str(tick)).limit_denominator(1_000_000)
    return n * frac.numerator / frac.denominator


def minute_prints(minute: PlannedMinute, base_n: int, prev_n: int) -> list[tuple[int, int]]:
    """(second within the minute, price in ticks) of one scripted minute: the price
    walks in equal steps from the previous close to the close, the last print at the
    close; a wick is one print at :30. Shared by the simulator and the plan check so
    that the check sees the very bars the market will print."""
    close_n = max(1, round(base_n * minute.close))
    k = len(PRINT_SECONDS)
    out = [
        (second, prev_n + round((close_n - prev_n) * (i + 1) / k))
        for i, second in enumerate(PRINT_SECONDS)
    ]
    if minute.wick is not None:
        wick_n = max(1, round(base_n * (1 + minute.wick / 100)))
        out.append((WICK_SECOND, wick_n))
        out.sort()
    return out


def _histories(base: float, token: int, first_start: int) -> list[list[Bar]]:
    """Three made-up pasts before an episode (rising, falling, flat; 40 bars): the
    labels must not depend on which one the market really had."""
    pasts: list[list[Bar]] = []
    for drift in (0.1, -0.1, 0.0):
        bars: list[Bar] = []
        price = base * (1 - drift / 100) ** 40
        for i in range(40):
            start = first_start - (40 - i) * MINUTE_S
            new = price * (1 + drift / 100) if drift else price * (1 + 0.0005 * (-1) ** i)
            bars.append(Bar(token, start, price, max(price, new), min(price, new), new, 1000, 1))
            price = new
        pasts.append(bars)
    return pasts


def _evaluate(
    history: Sequence[Bar],
    bars: Sequence[Bar],
    ratios: Sequence[float],
    scenario: Scenario,
) -> list[PlannedAlert]:
    indicators = IndicatorState()
    patterns = PatternState()
    for bar in history:  # warms RSI and the pattern state; no ratio, so no alert
        result = indicators.update(bar)
        evaluate(patterns, bar, volume_ratio=None, rsi=result.rsi_14 if result else None,
                 atr=None, regime=scenario.regime, vix=None, config=scenario.config)  # fmt: skip
    out: list[PlannedAlert] = []
    for bar, ratio in zip(bars, ratios, strict=True):
        result = indicators.update(bar)
        evaluated = evaluate(
            patterns,
            bar,
            volume_ratio=ratio,
            rsi=result.rsi_14 if result else None,
            atr=result.atr_14 if result else None,
            regime=scenario.regime,
            vix=None,
            config=scenario.config,
        )
        if evaluated is not None:
            out += [
                PlannedAlert(bar.instrument_token, a.pattern, a.signal, a.bar_start)
                for a in evaluated.alerts
            ]
    return out


def realized_ratios(
    starts: Sequence[int],
    volumes: Sequence[int],
    segment: int,
    expected: ExpectedVolume,
    window: int,
) -> list[float]:
    """The trailing ratio each planned minute will show (minutes before the plan at
    their expected volume), computed as the worker computes it."""
    have = dict(zip(starts, volumes, strict=True))
    out: list[float] = []
    for start in starts:
        slot = slot_of(segment, start)
        assert slot is not None
        span = range(start - min(slot, window - 1) * MINUTE_S, start + 1, MINUTE_S)
        out.append(sum(have.get(s, expected(s)) for s in span) / sum(expected(s) for s in span))
    return out


def plan_episode(
    episode: Episode,
    scenario: Scenario,
    expected: ExpectedVolume,
    *,
    base_price: float,
    tick: float,
    lot: int = 1,
) -> EpisodePlan:
    """The episode's minutes with sized volumes, checked against the rules.

    ``expected`` is the token's expected volume per minute (its baseline: what the worker
    divides by), ``base_price`` a representative price (the check runs the path at this
    level on the ``tick`` grid). Raises :class:`ScenarioError` when the path cannot be
    placed, or when the rules would not give exactly the intended alerts.
    """
    segment = episode.token & 0xFF
    if episode.kind == QUIET and not episode.scripted:
        end = episode.at + episode.minutes * MINUTE_S
        return EpisodePlan(episode, (), episode.at, end, None, ())
    if not (tick > 0 and base_price / tick >= MIN_PRICE_TICKS):
        raise ScenarioError(
            f"{episode.name}: token {episode.token} at {base_price} on a {tick} grid is too "
            f"coarse for a scripted path (needs {MIN_PRICE_TICKS} ticks to the price)"
        )
    steps, target_index = _steps(episode, scenario)
    first = episode.at - (target_index if target_index is not None else 0) * MINUTE_S
    starts = [first + j * MINUTE_S for j in range(len(steps))]
    min_volume = len(PRINT_SECONDS) * lot
    volumes = size_volumes(
        starts, [s.ratio for s in steps], segment, expected,
        window=scenario.volume_window, lot=lot, minimum=min_volume,
    )  # fmt: skip
    levels: list[float] = []
    level = 1.0
    for step in steps:
        level = step.level if step.level is not None else level * (1 + (step.move or 0.0) / 100)
        levels.append(level)
    minutes = tuple(
        PlannedMinute(start, close, step.wick, step.ratio, volume)
        for start, close, step, volume in zip(starts, levels, steps, volumes, strict=True)
    )
    ratios = realized_ratios(starts, volumes, segment, expected, scenario.volume_window)
    base_n = round(base_price / tick)
    bars = _bars(episode.token, minutes, base_n, tick, base_n)
    runs = [
        _evaluate(history, bars, ratios, scenario)
        for history in _histories(grid_price(base_n, tick), episode.token, first)
    ]
    alerts = runs[0]
    for other in runs[1:]:
        if other != alerts:
            raise ScenarioError(
                f"{episode.name}: the alerts depend on the history before the episode "
                f"({_ids(alerts)} vs {_ids(other)}); lengthen lead_in"
            )
    target = starts[target_index] if target_index is not None else None
    _check_intent(episode, target, alerts)
    return EpisodePlan(episode, minutes, first, starts[-1] + MINUTE_S, target, tuple(alerts))


def _ids(alerts: Iterable[PlannedAlert]) -> list[str]:
    return [a.id for a in alerts]


def _check_intent(episode: Episode, target: int | None, alerts: Sequence[PlannedAlert]) -> None:
    """The planned bars must alert exactly as labelled: the kind on its target bar
    (and only the companions the rules imply), nothing on any other bar."""
    if episode.kind == QUIET:
        if alerts:
            raise ScenarioError(f"{episode.name}: a quiet stretch would alert: {_ids(alerts)}")
        return
    assert episode.signal is not None and target is not None
    allowed = {(episode.kind, episode.signal)} | {
        (companion, episode.signal) for companion in COMPANIONS.get(episode.kind, ())
    }
    wrong = [a for a in alerts if a.bar_start != target or (a.pattern, a.signal) not in allowed]
    intended = [a for a in alerts if (a.pattern, a.signal) == (episode.kind, episode.signal)]
    if wrong or len(intended) != 1:
        raise ScenarioError(
            f"{episode.name}: planned bars alert {_ids(alerts)}, not one "
            f"{episode.kind} {episode.signal} at {iso_from_epoch(target)}"
        )


def check_overlaps(plans: Iterable[EpisodePlan]) -> None:
    """Two episodes of one token may not share a minute (nor the trailing window's
    reach: the next one starts at least one ratio window after the last one ends)."""
    by_token: dict[int, list[EpisodePlan]] = {}
    for plan in plans:
        by_token.setdefault(plan.episode.token, []).append(plan)
    for token, listed in by_token.items():
        listed.sort(key=lambda p: p.window_start)
        for before, after in itertools.pairwise(listed):
            if after.window_start < before.window_end:
                raise ScenarioError(
                    f"token {token}: {before.episode.name} and {after.episode.name} overlap"
                )


# --------------------------------------------------------------------------------------
# ground truth


def ground_truth(
    plans: Sequence[EpisodePlan],
    scenario: Scenario,
    *,
    symbols: Mapping[int, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The labels as JSON-ready data: per episode its window, its expected alerts (ids
    as the worker writes them) and its planned minutes."""
    episodes = []
    for plan in plans:
        ep = plan.episode
        episodes.append(
            {
                "name": ep.name,
                "token": ep.token,
                "symbol": (symbols or {}).get(ep.token, ""),
                "kind": ep.kind,
                "signal": ep.signal,
                "shape": ep.shape,
                "target": iso_from_epoch(plan.target) if plan.target is not None else None,
                "window_start": iso_from_epoch(plan.window_start),
                "window_end": iso_from_epoch(plan.window_end),
                "alerts": [
                    {
                        "id": a.id,
                        "pattern": a.pattern,
                        "signal": a.signal,
                        "bar_start": iso_from_epoch(a.bar_start),
                    }
                    for a in plan.alerts
                ],
                "minutes": [
                    {
                        "bar_start": iso_from_epoch(m.start),
                        "close": round(m.close, 8),
                        "wick": m.wick,
                        "ratio": m.ratio,
                        "volume": m.volume,
                    }
                    for m in plan.minutes
                ],
            }
        )
    return {
        "format": LABELS_FORMAT,
        "regime": scenario.regime,
        "volume_window": scenario.volume_window,
        "cooldown": scenario.config.cooldown,
        **(extra or {}),
        "episodes": episodes,
    }


def label_windows(labels: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """(token, window start, window end) epoch seconds of every labelled episode."""
    return [
        (
            int(e["token"]),
            int(datetime.fromisoformat(e["window_start"]).timestamp()),
            int(datetime.fromisoformat(e["window_end"]).timestamp()),
        )
        for e in labels["episodes"]
    ]


def expected_ids(labels: Mapping[str, Any]) -> set[str]:
    """Every alert id the labels expect."""
    return {a["id"] for e in labels["episodes"] for a in e["alerts"]}


def score(labels: Mapping[str, Any], alert_ids: Iterable[str]) -> dict[str, Any]:
    """Precision and recall of alert ids against the labels, over the labelled set:
    an alert counts when its token and bar fall inside a labelled window (quiet ones
    included); alerts elsewhere are reported as ``unlabelled``, not scored."""
    expected = expected_ids(labels)
    windows = label_windows(labels)
    scored: set[str] = set()
    unlabelled: set[str] = set()
    for identity in alert_ids:
        token, _, _, start = identity.split(":")
        inside = any(t == int(token) and lo <= int(start) < hi for t, lo, hi in windows)
        (scored if inside else unlabelled).add(identity)
    hits = scored & expected
    precision = len(hits) / len(scored) if scored else 1.0
    recall = len(hits) / len(expected) if expected else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "expected": len(expected),
        "alerts_in_windows": len(scored),
        "missed": sorted(expected - scored),
        "false": sorted(scored - expected),
        "unlabelled": sorted(unlabelled),
    }
