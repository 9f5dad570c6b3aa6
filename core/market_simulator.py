"""A deterministic market: full-mode Kite ticks for thousands of instruments, no clock.

The Kite-protocol simulator, the load tests and the end-to-end tests need a market that
looks real to every stage after the wire (volume baselines, bars, Greeks, VIX regimes)
and that replays bit-for-bit. So this module is pure: simulated time only moves when the
caller calls :meth:`MarketSimulator.advance`, and the same ``(instruments, seed, start)``
gives the same ticks however the caller chops time into steps.

How chop-independence is achieved: every instrument owns a :class:`random.Random` seeded
from ``(seed, token)`` and its own next-event time; one heap orders all events by
``(time, token)``. An event consumes only its own instrument's random numbers and reads
other instruments' state (an option reads its underlying, VIX reads NIFTY) as it stands
at that event time, which the global ordering fixes. ``advance`` just drains the heap up
to ``until``, so where the caller draws the lines cannot matter. Given the instrument
master, underlyings, NIFTY and VIX are simulated even when not subscribed, so a token's
ticks are also the same whatever else is subscribed.

The model, per instrument kind:

* Indices and equities (the *drivers*) follow geometric random walks; equities and
  indices other than NIFTY 50 load on NIFTY's moves with a beta, India VIX mean-reverts
  in log space inside [10, 30] and moves against NIFTY.
* Futures trade at the underlying times carry, options at Black-Scholes prices off the
  underlying with an ATM IV that scales with VIX and a put-skewed smile, floored at
  intrinsic value and one tick.
* Every trade happens at the bid or the ask around that fair value, so prices sit on the
  tick grid; a trade moves the day's volume (never down), VWAP, OHLC and slowly the OI.
  The five-level book is kept as the wire's integers (what :class:`core.tick.Depth`
  holds), and levels that stay in view keep their quantities when the best price moves.
* Event rates follow a U-shaped intraday profile (busy open and close, quiet lunch);
  options tick fast near the money and near expiry, minutes apart far out of the money.
* Events happen only inside the segment's session (NSE/NFO/BSE/BFO 09:15-15:30, CDS
  09:00-17:00, MCX 09:00-23:30 IST, Monday to Friday; no holiday calendar), and never
  after a derivative's expiry.
"""

from __future__ import annotations

import copy
import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

from config.instruments import INDEX_UNDERLYINGS, Instrument, InstrumentMaster
from core.scenarios import (
    EpisodePlan,
    PlannedMinute,
    Scenario,
    ScenarioError,
    check_overlaps,
    ground_truth,
    minute_prints,
    plan_episode,
)
from core.sessions import session_minutes, slot_of
from core.tick import Depth, Tick, price_divisor
from core.timeutil import IST

#: Annualised risk-free rate used for futures carry and option pricing.
RISK_FREE_RATE = 0.065
#: India VIX stays inside these bounds (its documented normal range).
VIX_FLOOR = 10.0
VIX_CAP = 30.0
#: Grid for indices, whose master rows carry tick_size 0.0.
INDEX_TICK = 0.05

INDIA_VIX = ("NSE", "INDIA VIX")
NIFTY_50 = ("NSE", "NIFTY 50")

_IST_OFFSET_MS = 19_800_000
_DAY_MS = 86_400_000
_MINUTE_MS = 60_000
_CAL_YEAR_MS = 365.0 * _DAY_MS
_TRADING_DAYS = 252.0

#: Sessions as (open, close) minutes after local midnight, per wire segment.

#: Intraday activity profile u(x) = A + B (2x - 1)^2 over the session fraction x; its mean
#: over the session is 1, so base rates are per-second averages over the day.
_PROFILE_A = 0.4
_PROFILE_B = 1.8

# Ticks are built positionally here (a keyword call costs 3x as much on the hot path):
# core.tick.POSITIONAL_FIELDS is the order, guarded where Tick is defined.

_EMPTY_LEVEL = (0, 0, 0)
_NEVER = 1 << 62
#: Shortest time to expiry used for liquidity (a day), so expiry-day rates stay finite.
_MIN_T = 1.0 / 365.0
_SQRT1_2 = math.sqrt(0.5)

# ----------------------------------------------------------------------------------------
# Pricing helpers (public: the generator and the tests price with the same functions).


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x * _SQRT1_2)


def black_scholes(
    spot: float,
    strike: float,
    t_years: float,
    vol: float,
    *,
    call: bool,
    rate: float = RISK_FREE_RATE,
) -> float:
    """European option value; intrinsic value at or after expiry (or with no vol)."""
    if t_years <= 0.0 or vol <= 0.0:
        return max(spot - strike, 0.0) if call else max(strike - spot, 0.0)
    sq = vol * math.sqrt(t_years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * t_years) / sq
    d2 = d1 - sq
    discounted = strike * math.exp(-rate * t_years)
    if call:
        return spot * norm_cdf(d1) - discounted * norm_cdf(d2)
    return discounted * norm_cdf(-d2) - spot * norm_cdf(-d1)


def smile_iv(atm_iv: float, spot: float, strike: float, t_years: float) -> float:
    """A put-skewed smile: IV rises steeply for low strikes, gently for high ones.

    Moneyness is scaled by sqrt(T) so that a weekly's wings steepen as expiry nears, the
    way Indian index smiles do.
    """
    m = math.log(strike / spot) / max(math.sqrt(max(t_years, 0.0)), 0.05)
    factor = 1.0 - 0.35 * m + 0.9 * m * m
    return atm_iv * min(max(factor, 0.6), 3.0)


def price_step(instrument: Instrument) -> float:
    """The grid an instrument's prices sit on (indices list tick_size 0.0)."""
    if instrument.tick_size > 0.0:
        return instrument.tick_size
    return INDEX_TICK


def intraday_profile(fraction: float) -> float:
    """Relative activity at a point of the session (0 = open, 1 = close); mean 1."""
    y = 2.0 * fraction - 1.0
    return _PROFILE_A + _PROFILE_B * y * y


def _profile_integral(fraction: float) -> float:
    """Share of a day's activity done by ``fraction`` of the session."""
    y = 2.0 * fraction - 1.0
    return _PROFILE_A * fraction + _PROFILE_B * (y * y * y + 1.0) / 6.0


# ----------------------------------------------------------------------------------------
# Time arithmetic on integer epoch milliseconds (IST has no DST, so it is plain offsets).


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _to_ms(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"simulated times must be timezone-aware, got {when!r}")
    return (when - _EPOCH) // _ONE_MS


def _from_ms(ms: int) -> datetime:
    return (_EPOCH + ms * _ONE_MS).astimezone(IST)


def _local_day(ms: int) -> int:
    """Days since 1970-01-01 in IST."""
    return (ms + _IST_OFFSET_MS) // _DAY_MS


def _is_trading_day(day: int) -> bool:
    return (day + 3) % 7 < 5  # 1970-01-01 was a Thursday; Monday = 0


def _day_start_ms(day: int) -> int:
    return day * _DAY_MS - _IST_OFFSET_MS


class _Session:
    """One segment's session rule, in milliseconds."""

    __slots__ = ("close_off", "length", "open_off", "trading_year_ms")

    def __init__(self, segment_id: int) -> None:
        open_min, close_min = session_minutes(segment_id)
        self.open_off = open_min * _MINUTE_MS
        self.close_off = close_min * _MINUTE_MS
        self.length = self.close_off - self.open_off
        self.trading_year_ms = self.length * _TRADING_DAYS

    def bounds(self, day: int) -> tuple[int, int]:
        start = _day_start_ms(day)
        return start + self.open_off, start + self.close_off

    def next_open_day(self, day: int) -> int:
        day += 1
        while not _is_trading_day(day):
            day += 1
        return day

    def context(self, ms: int) -> tuple[int, float]:
        """The session that is current or last completed at ``ms``: (day, fraction done)."""
        day = _local_day(ms)
        if _is_trading_day(day):
            open_ms, close_ms = self.bounds(day)
            if open_ms <= ms <= close_ms:
                return day, (ms - open_ms) / self.length
            if ms > close_ms:
                return day, 1.0
        day -= 1
        while not _is_trading_day(day):
            day -= 1
        return day, 1.0


# ----------------------------------------------------------------------------------------
# Per-instrument state. Plain classes with __slots__: the hot loop touches them millions
# of times, and attribute access on slots is the cheapest Python offers.


class _State:
    """What every instrument has: a grid, a session, a day's statistics, a book, and the
    time of its next event. Subclasses define :meth:`event` and :meth:`start_state`."""

    __slots__ = (
        "ask_n",
        "asks_raw",
        "atp_digits",
        "base_rate",
        "bid_n",
        "bids_raw",
        "close",
        "day_close_ms",
        "day_open_ms",
        "den",
        "depth_lots",
        "divisor",
        "emit",
        "expiry_ms",
        "fair",
        "has_oi",
        "high",
        "high_n",
        "last_ms",
        "last_qty",
        "last_tick",
        "lot",
        "low",
        "low_n",
        "ltp",
        "ltp_n",
        "ltt",
        "mean_lots",
        "num",
        "oi",
        "oi_high",
        "oi_low",
        "open",
        "open_n",
        "profile_a",
        "profile_b",
        "rate_now",
        "rng",
        "session",
        "session_len",
        "spread_frac",
        "tbq",
        "tick",
        "token",
        "tsq",
        "turnover",
        "volume",
        "wire_per_tick",
    )

    def __init__(self, token: int, tick: float, session: _Session, rng: random.Random) -> None:
        self.token = token
        self.tick = tick
        frac = Fraction(str(tick)).limit_denominator(1_000_000)
        self.num = frac.numerator
        self.den = frac.denominator
        # Kite's average price carries the segment's decimals: 2, or 4 for currencies.
        self.atp_digits = 4 if self.den > 100 else 2
        # The book is kept as the wire's ints (price in 1/divisor units), which is what
        # core.tick.Depth holds; a grid step must be a whole number of wire units.
        self.divisor = price_divisor(token & 0xFF) if token > 0 else 100.0
        self.wire_per_tick = max(1, round(tick * self.divisor))
        self.session = session
        self.session_len = session.length
        self.rng = rng
        self.emit = False
        self.has_oi = False
        self.expiry_ms = _NEVER
        self.base_rate = 1.0 / 1000.0
        self.rate_now = self.base_rate
        # The intraday activity profile; indices are computed on a steady clock instead.
        self.profile_a = _PROFILE_A
        self.profile_b = _PROFILE_B
        self.lot = 1
        self.mean_lots = 1.0
        self.depth_lots = 8
        self.spread_frac = 0.0
        self.fair = 0.0
        self.last_ms = 0
        self.day_open_ms = 0
        self.day_close_ms = 0
        self.ltp_n = self.open_n = self.high_n = self.low_n = self.bid_n = self.ask_n = 0
        self.ltp = self.open = self.high = self.low = self.close = 0.0
        self.volume = self.tbq = self.tsq = self.last_qty = self.ltt = 0
        self.turnover = 0.0
        self.oi = self.oi_high = self.oi_low = 0
        self.bids_raw: tuple[int, ...] = ()
        self.asks_raw: tuple[int, ...] = ()
        self.last_tick: Tick | None = None

    # --- grid -------------------------------------------------------------------------
    def price(self, n: int) -> float:
        """Ticks -> price, correctly rounded (n * 0.05 would give 26000.050000000003)."""
        return n * self.num / self.den

    def ticks(self, price: float) -> float:
        return price * self.den / self.num

    # --- scheduling -------------------------------------------------------------------
    def schedule(self, ms: int) -> int:
        """The next event time after one at ``ms``; -1 when there is none (expired).

        Exponential gaps at ``rate_now`` (events per ms) shaped by the intraday profile;
        past the close the next event is early in the next session.
        """
        y = 2.0 * (ms - self.day_open_ms) / self.session_len - 1.0
        rate = self.rate_now * (self.profile_a + self.profile_b * y * y)
        nxt = ms + 1 + int(-math.log(1.0 - self.rng.random()) / rate)
        if nxt > self.day_close_ms:
            nxt = self._next_session_event()
        return nxt if nxt <= self.expiry_ms else -1

    def _next_session_event(self) -> int:
        """The first event of a later session (the gap may skip a whole quiet session)."""
        session = self.session
        day = _local_day(self.day_close_ms)
        rate = self.rate_now * (self.profile_a + self.profile_b)  # the open's rate
        while True:
            day = session.next_open_day(day)
            open_ms, close_ms = session.bounds(day)
            if open_ms > self.expiry_ms:
                return _NEVER
            nxt = open_ms + int(-math.log(1.0 - self.rng.random()) / rate)
            if nxt <= close_ms:
                return nxt

    def first_event(self, start_ms: int) -> int:
        return self.schedule(min(start_ms, self.day_close_ms))

    def new_day(self, ms: int) -> None:
        """Start a new session: the last price is the new close, the day's counters reset."""
        day = _local_day(ms)
        self.day_open_ms, self.day_close_ms = self.session.bounds(day)
        self.last_ms = self.day_open_ms
        self.close = self.ltp
        self.open_n = self.high_n = self.low_n = 0
        self.volume = 0
        self.turnover = 0.0
        self.oi_high = self.oi_low = self.oi

    # --- trading ----------------------------------------------------------------------
    def trade(self, ms: int, fair: float, floor_n: int) -> None:
        """One print at the bid or the ask around ``fair`` (buyers more likely the closer
        fair is to the ask); updates the day's statistics, OI and the book. ``floor_n``
        is the lowest admissible price in ticks (1, or intrinsic value)."""
        rng = self.rng
        num = self.num
        den = self.den
        x = fair * den / num
        if x < floor_n:
            x = float(floor_n)
        spread = 1 + int(x * self.spread_frac)
        bid_n = int(x - 0.5 * (spread - 1))
        ask_n = bid_n + spread
        bits = rng.getrandbits(64)
        buy = (bits & 0xFFFF) * spread < (x - bid_n) * 65536.0 or bid_n < floor_n or bid_n < 1
        ltp_n = ask_n if buy else bid_n
        price = ltp_n * num / den
        lot = self.lot
        qty = lot * (1 + int(-math.log(1.0 - rng.random()) * self.mean_lots))

        if self.open_n == 0:
            self.open_n = self.high_n = self.low_n = ltp_n
            self.open = self.high = self.low = price
        elif ltp_n > self.high_n:
            self.high_n = ltp_n
            self.high = price
        elif ltp_n < self.low_n:
            self.low_n = ltp_n
            self.low = price
        self.ltp_n = ltp_n
        self.ltp = price
        self.last_qty = qty
        self.volume += qty
        self.turnover += qty * price
        self.ltt = ms // 1000

        # Resting quantities wander; the side a trade hits thins out a little.
        depth = self.depth_lots
        step = lot * depth
        b = bits >> 16
        tbq = self.tbq + step * ((b & 7) - (4 if buy else 3))
        tsq = self.tsq + step * (((b >> 3) & 7) - (3 if buy else 4))
        self.tbq = tbq if tbq > lot else lot
        self.tsq = tsq if tsq > lot else lot
        if self.has_oi and (b >> 6) & 3 == 0:  # OI moves on ~1 trade in 4, a few lots
            oi = self.oi + lot * (((b >> 8) & 7) - 3)
            if oi < 0:
                oi = 0
            self.oi = oi
            if oi > self.oi_high:
                self.oi_high = oi
            elif oi < self.oi_low:
                self.oi_low = oi

        # The book. Usually the best prices stay and only their quantities change.
        b >>= 12
        old = self.bids_raw
        if bid_n == self.bid_n and old and bid_n > 0:
            lots = 1 + (b & 7) * depth // 2
            self.bids_raw = (lots * lot, old[1], 1 + lots // (1 + depth), *old[3:])
        else:
            self.bids_raw = self._side(old, self.bid_n, bid_n, -1, b)
            self.bid_n = bid_n
        b >>= 15
        old = self.asks_raw
        if ask_n == self.ask_n and old:
            lots = 1 + (b & 7) * depth // 2
            self.asks_raw = (lots * lot, old[1], 1 + lots // (1 + depth), *old[3:])
        else:
            self.asks_raw = self._side(old, self.ask_n, ask_n, 1, b)
            self.ask_n = ask_n

    def _side(
        self,
        old: tuple[int, ...],
        old_n: int,
        best_n: int,
        direction: int,
        bits: int,
    ) -> tuple[int, ...]:
        """One side of the book, as 15 wire ints (quantity, price, orders) x 5, after its
        best price moved. ``direction`` is -1 for bids (prices fall away from the best),
        +1 for asks; level i is at best + direction * i ticks. Levels still in view keep
        their quantities, as in a real book; empty levels are zeros, as on the wire."""
        lot = self.lot
        depth = self.depth_lots
        wpt = self.wire_per_tick
        lots = 1 + (bits & 7) * depth // 2
        top = (lots * lot, best_n * wpt, 1 + lots // (1 + depth)) if best_n >= 1 else _EMPTY_LEVEL
        shift = (best_n - old_n) * direction if old else 5
        if 0 < shift < 5:  # best moved away: deeper levels surface at the far end
            n = best_n + direction * (5 - shift)
            count = shift
        elif -5 < shift < 0:  # best improved: new levels in between
            n = best_n + direction
            count = -shift - 1
        else:
            n = best_n + direction
            count = 4
        fresh: list[int] = []
        for _ in range(count):
            bits >>= 3
            if n < 1:
                fresh += _EMPTY_LEVEL
            else:
                lots = 1 + (bits & 7) * depth // 2
                fresh += (lots * lot, n * wpt, 1 + lots // (1 + depth))
            n += direction
        if 0 < shift < 5:
            return (*top, *old[3 * (shift + 1) :], *fresh)
        if -5 < shift < 0:
            return (*top, *fresh, *old[: 3 * (5 + shift)])
        return (*top, *fresh)

    def tradable_tick(self, ts: int) -> Tick:
        close = self.close
        ltp = self.ltp
        volume = self.volume
        tick = Tick(
            self.token,
            "full",
            True,
            ltp,
            self.last_qty,
            round(self.turnover / volume, self.atp_digits) if volume else ltp,
            volume,
            self.tbq,
            self.tsq,
            self.open,
            self.high,
            self.low,
            close,
            (ltp - close) * 100.0 / close if close else 0.0,
            self.ltt,
            self.oi,
            self.oi_high,
            self.oi_low,
            ts,
            Depth.from_raw(self.bids_raw + self.asks_raw, self.divisor),
        )
        self.last_tick = tick
        return tick

    def initial_tick(self, start_ms: int) -> Tick:
        return self.tradable_tick(min(start_ms, self.day_close_ms) // 1000)

    def prefill(self, fraction: float) -> None:
        """Day-so-far statistics at the simulation start, so that the first snapshot (the
        cached tick a real server sends on subscribe) looks like a live instrument."""
        rng = self.rng
        lot = self.lot
        events = self.rate_now * self.session_len * _profile_integral(fraction)
        volume = int(events * (1.0 + self.mean_lots)) * lot
        self.volume = volume
        self.turnover = volume * self.price((self.open_n + self.ltp_n) // 2 or 1)
        self.last_qty = lot * (1 + int(self.mean_lots))
        self.tbq = lot * self.depth_lots * (20 + int(rng.random() * 40))
        self.tsq = lot * self.depth_lots * (20 + int(rng.random() * 40))
        if self.has_oi:
            self.oi_high = self.oi + lot * int(rng.random() * 50 * fraction)
            self.oi_low = max(0, self.oi - lot * int(rng.random() * 50 * fraction))
        x = self.ltp_n
        spread = 1 + int(x * self.spread_frac)
        bid_n = max(0, x - 1 - (spread - 1) // 2)
        self.bids_raw = self._side((), 0, bid_n, -1, rng.getrandbits(24))
        self.asks_raw = self._side((), 0, bid_n + spread, 1, rng.getrandbits(24))
        self.bid_n = bid_n
        self.ask_n = bid_n + spread

    # --- overridden -------------------------------------------------------------------
    def event(self, ms: int, out: list[Tick]) -> int:  # pragma: no cover - overridden
        """Process the event at ``ms`` (append a tick to ``out`` if one is emitted) and
        return the next event time (-1: none)."""
        raise NotImplementedError

    def start_state(self, start_ms: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _Driver(_State):
    """A spot process: an index, an equity, or a hidden synthetic spot (MCX, CDS)."""

    __slots__ = ("anchor", "anchor_log", "beta", "idio_sd_ms", "is_equity", "kind", "sigma")

    def __init__(
        self, token: int, tick: float, session: _Session, rng: random.Random, kind: str
    ) -> None:
        super().__init__(token, tick, session, rng)
        self.kind = kind  # "index" | "equity" | "spot"
        self.is_equity = kind == "equity"
        if kind == "index":  # NSE and BSE publish index values about once a second
            self.profile_a = 1.0
            self.profile_b = 0.0
        self.sigma = 0.15
        self.beta = 0.0
        self.anchor: _Driver | None = None
        self.anchor_log = 0.0
        self.idio_sd_ms = 0.0

    def configure_vol(self, sigma: float, beta: float, anchor: _Driver | None) -> None:
        """Total vol ``sigma``; ``beta`` of it loads on the anchor's (NIFTY's) moves."""
        self.sigma = sigma
        self.anchor = anchor
        self.beta = beta if anchor is not None else 0.0
        market = (self.beta * anchor.sigma) ** 2 if anchor is not None else 0.0
        idio = max(sigma * sigma - market, 0.2 * sigma * sigma)
        self.idio_sd_ms = math.sqrt(idio / self.session.trading_year_ms)

    def start_state(self, start_ms: int) -> None:
        rng = self.rng
        day, fraction = self.session.context(start_ms)
        self.day_open_ms, self.day_close_ms = self.session.bounds(day)
        self.last_ms = min(start_ms, self.day_close_ms)
        day_sd = self.sigma / math.sqrt(_TRADING_DAYS)
        # The reference price (the master's last_price) is the previous close when the
        # start is inside a session, and the last price of the session just completed
        # otherwise, so that the next session opens against it.
        ref = self.fair
        move = day_sd * math.sqrt(fraction) * rng.gauss(0.0, 1.0)
        if fraction >= 1.0:
            close = ref * math.exp(-move)
        else:
            close = ref
            self.fair = ref * math.exp(move)
        self.close = self.price(max(1, round(self.ticks(close))))
        open_ = close * math.exp(0.3 * day_sd * rng.gauss(0.0, 1.0))
        if self.anchor is not None:
            self.anchor_log = math.log(self.anchor.fair)
        spread = day_sd * math.sqrt(fraction) * 0.4
        high = max(open_, self.fair) * math.exp(abs(rng.gauss(0.0, spread)))
        low = min(open_, self.fair) * math.exp(-abs(rng.gauss(0.0, spread)))
        self.open_n = max(1, round(self.ticks(open_)))
        self.high_n = max(1, math.ceil(self.ticks(high)))
        self.low_n = max(1, int(self.ticks(low)))
        self.ltp_n = min(max(round(self.ticks(self.fair)), self.low_n), self.high_n)
        self.open = self.price(self.open_n)
        self.high = self.price(self.high_n)
        self.low = self.price(self.low_n)
        self.ltp = self.price(self.ltp_n)
        self.ltt = min(start_ms, self.day_close_ms) // 1000
        if self.is_equity:
            self.prefill(fraction)

    def evolve(self, ms: int) -> None:
        """Advance the fair value to ``ms``: beta times NIFTY's move plus own noise."""
        dt = ms - self.last_ms
        self.last_ms = ms
        move = self.idio_sd_ms * math.sqrt(dt) * self.rng.gauss(0.0, 1.0) if dt > 0 else 0.0
        anchor = self.anchor
        if anchor is not None:
            log_anchor = math.log(anchor.fair)
            move += self.beta * (log_anchor - self.anchor_log)
            self.anchor_log = log_anchor
        self.fair *= math.exp(move)

    def new_day(self, ms: int) -> None:
        super().new_day(ms)
        # Overnight gap: half a day's move, applied before the session's first print.
        self.fair *= math.exp(0.5 * self.sigma / math.sqrt(_TRADING_DAYS) * self.rng.gauss(0, 1))
        if self.anchor is not None:
            self.anchor_log = math.log(self.anchor.fair)

    def event(self, ms: int, out: list[Tick]) -> int:
        if ms > self.day_close_ms:
            self.new_day(ms)
        self.evolve(ms)
        if self.is_equity:
            self.trade(ms, self.fair, 1)
            if self.emit:
                out.append(self.tradable_tick(ms // 1000))
        else:
            self.index_print(ms, out)
        return self.schedule(ms)

    def index_print(self, ms: int, out: list[Tick]) -> None:
        """Indices print their value when it moves on the grid; no trades, no volume."""
        n = round(self.fair * self.den / self.num) or 1
        if n == self.ltp_n and self.open_n:
            return
        price = n * self.num / self.den
        if self.open_n == 0:
            self.open_n = self.high_n = self.low_n = n
            self.open = self.high = self.low = price
        elif n > self.high_n:
            self.high_n = n
            self.high = price
        elif n < self.low_n:
            self.low_n = n
            self.low = price
        self.ltp_n = n
        self.ltp = price
        if self.emit:
            out.append(self.index_tick(ms // 1000))

    def index_tick(self, ts: int) -> Tick:
        close = self.close
        tick = Tick(
            self.token,
            "full",
            False,
            self.ltp,
            None,
            None,
            None,
            None,
            None,
            self.open,
            self.high,
            self.low,
            close,
            (self.ltp - close) * 100.0 / close if close else 0.0,
            None,
            None,
            None,
            None,
            ts,
            None,
        )
        self.last_tick = tick
        return tick

    def initial_tick(self, start_ms: int) -> Tick:
        if self.is_equity:
            return super().initial_tick(start_ms)
        return self.index_tick(min(start_ms, self.day_close_ms) // 1000)


class _Vix(_Driver):
    """India VIX: log mean-reversion, a negative loading on NIFTY's return, clamped."""

    __slots__ = ("kappa", "mean_log", "volvol_ms")

    def __init__(self, token: int, tick: float, session: _Session, rng: random.Random) -> None:
        super().__init__(token, tick, session, rng, "index")
        self.kappa = 0.0
        self.mean_log = 0.0
        self.volvol_ms = 0.0

    def configure_vix(self, anchor: _Driver | None) -> None:
        self.anchor = anchor
        self.sigma = 0.9  # vol of vol: about 5.7 % a day, as India VIX moves
        self.beta = -3.5 if anchor is not None else 0.0  # VIX -3.5 % when NIFTY +1 %
        self.kappa = 8.0 / self.session.trading_year_ms
        self.fair = min(max(self.fair, VIX_FLOOR), VIX_CAP)
        self.mean_log = math.log(min(max(self.fair, 11.0), 20.0))
        self.volvol_ms = self.sigma / math.sqrt(self.session.trading_year_ms)

    def evolve(self, ms: int) -> None:
        dt = ms - self.last_ms
        self.last_ms = ms
        log_v = math.log(self.fair)
        move = self.kappa * (self.mean_log - log_v) * dt
        if dt > 0:
            move += self.volvol_ms * math.sqrt(dt) * self.rng.gauss(0.0, 1.0)
        anchor = self.anchor
        if anchor is not None:
            log_anchor = math.log(anchor.fair)
            move += self.beta * (log_anchor - self.anchor_log)
            self.anchor_log = log_anchor
        self.fair = min(max(self.fair * math.exp(move), VIX_FLOOR), VIX_CAP)

    def start_state(self, start_ms: int) -> None:
        super().start_state(start_ms)
        self.fair = min(max(self.fair, VIX_FLOOR), VIX_CAP)
        self.ltp_n = round(self.ticks(self.fair))
        self.ltp = self.price(self.ltp_n)
        self.high_n = max(self.high_n, self.ltp_n)
        self.low_n = min(self.low_n, self.ltp_n)
        self.high = self.price(self.high_n)
        self.low = self.price(self.low_n)


class _Derivative(_State):
    """A future or an option: its fair value comes from the underlying driver."""

    __slots__ = (
        "call",
        "decay_per_year",
        "inv_vix_ref",
        "is_option",
        "iv_base",
        "peak_rate",
        "strike",
        "under",
        "vix",
    )

    def __init__(
        self,
        token: int,
        tick: float,
        session: _Session,
        rng: random.Random,
        under: _Driver,
        expiry_ms: int,
    ) -> None:
        super().__init__(token, tick, session, rng)
        self.under = under
        self.expiry_ms = expiry_ms
        self.has_oi = True
        self.is_option = False
        self.call = True
        self.strike = 0.0
        self.peak_rate = 0.0
        self.decay_per_year = 365.0 / 7.0
        self.iv_base = under.sigma * 1.05
        self.vix: _Vix | None = None
        self.inv_vix_ref = 1.0

    def atm_iv(self) -> float:
        """The underlying's vol, scaled by where VIX stands against its start level."""
        vix = self.vix
        if vix is None:
            return self.iv_base
        return self.iv_base * (vix.fair * self.inv_vix_ref) ** 0.8

    def value(self, ms: int, spot: float) -> float:
        """Fair value at ``ms``; for options also refreshes the event rate, because
        liquidity follows moneyness and time to expiry."""
        t = (self.expiry_ms - ms) / _CAL_YEAR_MS
        if not self.is_option:
            return spot * math.exp(RISK_FREE_RATE * t) if t > 0.0 else spot
        atm = self.atm_iv()
        strike = self.strike
        fair = black_scholes(spot, strike, t, smile_iv(atm, spot, strike, t), call=self.call)
        tt = t if t > _MIN_T else _MIN_T
        d = math.log(spot / strike) / (atm * math.sqrt(tt))
        near = self.peak_rate * math.exp(-0.5 * d * d) / (1.0 + tt * self.decay_per_year)
        self.rate_now = self.base_rate * (near + 1.0)
        return fair

    def floor_n(self, spot: float) -> int:
        """The lowest price in ticks: one tick, or an option's intrinsic value."""
        if self.is_option:
            value = spot - self.strike if self.call else self.strike - spot
            if value > 0.0:
                n = int(value * self.den / self.num)
                return n if n > 1 else 1
        return 1

    def start_state(self, start_ms: int) -> None:
        day, fraction = self.session.context(start_ms)
        self.day_open_ms, self.day_close_ms = self.session.bounds(day)
        ms = self.last_ms = min(start_ms, self.day_close_ms)
        under = self.under
        spot = under.fair
        close = self.value(ms, under.close if under.close > 0 else spot)
        self.fair = self.value(ms, spot)
        self.close = self.price(max(1, round(self.ticks(close))))
        self.ltp_n = max(self.floor_n(spot), round(self.ticks(self.fair)))
        self.ltp = self.price(self.ltp_n)
        rng = self.rng
        self.open_n = max(1, round(self.ticks(close) * math.exp(0.02 * rng.gauss(0.0, 1.0))))
        self.high_n = max(self.open_n, self.ltp_n) + int(abs(rng.gauss(0.0, 2.0)))
        self.low_n = max(1, min(self.open_n, self.ltp_n) - int(abs(rng.gauss(0.0, 2.0))))
        self.open = self.price(self.open_n)
        self.high = self.price(self.high_n)
        self.low = self.price(self.low_n)
        self.ltt = ms // 1000
        self.prefill(fraction)

    def event(self, ms: int, out: list[Tick]) -> int:
        if ms > self.day_close_ms:
            self.new_day(ms)
        spot = self.under.fair
        fair = self.fair = self.value(ms, spot)
        self.trade(ms, fair, self.floor_n(spot))
        out.append(self.tradable_tick(ms // 1000))
        return self.schedule(ms)


# ----------------------------------------------------------------------------------------
# Scenario injection (core.scenarios): an equity whose path is scripted in some windows.


class _Window:
    """One scripted episode of a token: its span in ms, its planned minutes, and their
    prices in ticks, fixed at the first print from the last price at that moment (the
    plan's closes are factors of it)."""

    __slots__ = ("end_ms", "minutes", "prices", "start_ms")

    def __init__(self, start_ms: int, end_ms: int, minutes: Sequence[PlannedMinute]) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.minutes = minutes
        self.prices: list[int] = []

    def resolve(self, base_n: int) -> None:
        prev = base_n
        for minute in self.minutes:
            placed = minute_prints(minute, base_n, prev)
            self.prices += [n for _, n in placed]
            prev = placed[-1][1]


class _ScriptedDriver(_Driver):
    """An equity that plays scripted prints inside its episode windows.

    Inside a window the natural process is silent (its events only reschedule, so the
    token's volume and closes are exactly the script's); every print re-anchors the
    random walk (fair value, NIFTY reference, last event time), so after the window the
    walk continues from the scripted price without a jump. A subclass, used only for
    scenario tokens, so that the hot path of every other instrument is untouched.
    """

    __slots__ = ("cursor", "next_natural", "prints", "windows")

    def __init__(
        self, token: int, tick: float, session: _Session, rng: random.Random, kind: str
    ) -> None:
        super().__init__(token, tick, session, rng, kind)
        #: (ms, window index, print index in the window, quantity), in time order
        self.prints: list[tuple[int, int, int, int]] = []
        self.windows: list[_Window] = []
        self.cursor = 0
        self.next_natural = _NEVER

    def add_window(self, plan: EpisodePlan) -> None:
        """Schedule a plan's prints: each minute's as :func:`core.scenarios.minute_prints`
        places them, its volume split evenly in whole lots (the rest on the last)."""
        index = len(self.windows)
        self.windows.append(_Window(plan.window_start * 1000, plan.window_end * 1000, plan.minutes))
        position = 0
        for minute in plan.minutes:
            seconds = [second for second, _ in minute_prints(minute, 1, 1)]
            each, extra = divmod(minute.volume // self.lot, len(seconds))
            for i, second in enumerate(seconds):
                qty = (each + (extra if i == len(seconds) - 1 else 0)) * self.lot
                self.prints.append((minute.start * 1000 + second * 1000, index, position, qty))
                position += 1
        self.prints.sort()

    def _next(self) -> int:
        script = self.prints[self.cursor][0] if self.cursor < len(self.prints) else _NEVER
        return min(script, self.next_natural)

    def first_event(self, start_ms: int) -> int:
        natural = super().first_event(start_ms)
        self.next_natural = natural if natural >= 0 else _NEVER
        return self._next()

    def _silenced(self, ms: int) -> bool:
        return any(w.start_ms <= ms < w.end_ms for w in self.windows)

    def event(self, ms: int, out: list[Tick]) -> int:
        prints = self.prints
        if self.cursor < len(prints) and prints[self.cursor][0] == ms:
            _, index, position, qty = prints[self.cursor]
            self.cursor += 1
            self.scripted_print(ms, self.windows[index], position, qty, out)
        else:
            if self._silenced(ms):
                if ms > self.day_close_ms:
                    self.new_day(ms)
                nxt = self.schedule(ms)
            else:
                nxt = super().event(ms, out)
            self.next_natural = nxt if nxt >= 0 else _NEVER
        return self._next()

    def scripted_print(
        self, ms: int, window: _Window, position: int, qty: int, out: list[Tick]
    ) -> None:
        """The window's ``position``-th print: one trade on the grid."""
        if ms > self.day_close_ms:
            self.new_day(ms)
        if not window.prices:
            window.resolve(self.ltp_n or max(1, round(self.ticks(self.fair))))
        n = window.prices[position]
        buy = n >= self.ltp_n
        price = n * self.num / self.den
        if self.open_n == 0:
            self.open_n = self.high_n = self.low_n = n
            self.open = self.high = self.low = price
        elif n > self.high_n:
            self.high_n = n
            self.high = price
        elif n < self.low_n:
            self.low_n = n
            self.low = price
        self.ltp_n = n
        self.ltp = price
        self.last_qty = qty
        self.volume += qty
        self.turnover += qty * price
        self.ltt = ms // 1000
        # A one-tick book around the print (bought at the ask or sold at the bid).
        bid_n = n - 1 if buy else n
        bits = self.rng.getrandbits(64)
        self.bids_raw = self._side(self.bids_raw, self.bid_n, bid_n, -1, bits)
        self.asks_raw = self._side(self.asks_raw, self.ask_n, bid_n + 1, 1, bits >> 20)
        self.bid_n, self.ask_n = bid_n, bid_n + 1
        # The walk resumes from here after the window.
        self.fair = price
        self.last_ms = ms
        if self.anchor is not None:
            self.anchor_log = math.log(self.anchor.fair)
        if self.emit:
            out.append(self.tradable_tick(ms // 1000))

    def expected_minute_volume(self, minute_ms: int) -> float:
        """The model's expected volume of a minute (what a long history averages to):
        events x mean print size, events from the U-shaped rate over the minute, and a
        print's mean size ``lot x (1 + E[int(Exp x m)]) = lot x (1 + 1/(e^(1/m) - 1))``.
        Used when no baseline is given for the token."""
        open_ms, _ = self.session.bounds(_local_day(minute_ms))
        x0 = (minute_ms - open_ms) / self.session_len
        x1 = (minute_ms + _MINUTE_MS - open_ms) / self.session_len
        events = self.rate_now * self.session_len * (_profile_integral(x1) - _profile_integral(x0))
        return events * self.lot * (1.0 + 1.0 / math.expm1(1.0 / self.mean_lots))


def _expected_volume(
    drv: _ScriptedDriver, profile: Sequence[float] | None
) -> Callable[[int], float]:
    """A token's expected volume of the minute starting at an epoch second: its
    baseline's slot value when given (what the worker divides by), else the model's."""
    segment = drv.token & 0xFF

    def expected(start_s: int) -> float:
        if profile is not None:
            slot = slot_of(segment, start_s)
            if slot is not None and slot < len(profile) and profile[slot] > 0:
                return float(profile[slot])
        return drv.expected_minute_volume(start_s * 1000)

    return expected


# ----------------------------------------------------------------------------------------


class MarketSimulator:
    """Full-mode ticks for a fixed set of instruments, in simulated time.

    ``instruments`` are the subscribed ones (their ticks are emitted). Derivatives need
    their underlying's price: it is simulated too, emitted only if subscribed. With a
    ``master``, an unsubscribed underlying (and NIFTY 50 and India VIX, which drive the
    market factor and the IV level) is simulated from its master row, so a token's path
    does not depend on what else is subscribed. Without one, underlyings come from
    ``instruments`` alone; a derivative with none there (MCX and currency futures have
    no spot row) gets a hidden synthetic spot from its own prices.

    ``activity`` scales every tick rate (2.0 = twice as busy), for load tests.

    ``scenario`` (:class:`core.scenarios.Scenario`) scripts labelled episodes on
    subscribed equities; ``baselines`` gives a token's expected volume per
    minute-of-session slot (what the worker's baseline says; else the model's own
    expectation is used) to size them. ``reference_prices`` starts a token from a given
    price instead of its master row's (the last close of its history, so that the live
    day continues it). Without these the market is exactly the same as before.
    """

    def __init__(
        self,
        instruments: Sequence[Instrument],
        seed: int,
        start: datetime,
        *,
        master: InstrumentMaster | None = None,
        activity: float = 1.0,
        scenario: Scenario | None = None,
        baselines: Mapping[int, Sequence[float]] | None = None,
        reference_prices: Mapping[int, float] | None = None,
    ) -> None:
        if activity <= 0:
            raise ValueError(f"activity must be positive, got {activity}")
        self._start_ms = _to_ms(start)
        self._now_ms = self._start_ms
        self._seed = seed
        self._activity = activity
        subscribed: dict[int, Instrument] = {}
        for inst in instruments:
            subscribed.setdefault(inst.instrument_token, inst)
        self._tokens = list(subscribed)
        resolver = (
            master if master is not None else InstrumentMaster.from_instruments(subscribed.values())
        )
        self._states: dict[int, _State] = {}
        self._references = dict(reference_prices or {})
        self._scripted: set[int] = set(scenario.tokens) if scenario is not None else set()
        for token in self._scripted:
            row = subscribed.get(token)
            if row is None or row.is_derivative or row.is_index:
                raise ScenarioError(f"scenario token {token} is not a subscribed equity")
        self._build(subscribed, resolver)
        self._scenario = scenario
        #: The scenario's episode plans (labels: :meth:`ground_truth`).
        self.plans: list[EpisodePlan] = []
        if scenario is not None:
            self.plans = self._script(scenario, baselines or {})
        ordered = sorted(self._states.values(), key=lambda s: s.token)
        self._slots = ordered
        self._slot_bits = max(1, len(ordered).bit_length())
        self._heap: list[int] = []
        for slot, st in enumerate(ordered):
            nxt = st.first_event(self._start_ms)
            if nxt >= 0:
                self._heap.append((nxt << self._slot_bits) | slot)
        heapq.heapify(self._heap)

    # --- public -----------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        """Simulated time: the start, then the last ``until`` given to :meth:`advance`."""
        return _from_ms(self._now_ms)

    @property
    def tokens(self) -> list[int]:
        """The subscribed tokens, in the order given (duplicates dropped)."""
        return list(self._tokens)

    def snapshot(self, token: int) -> Tick | None:
        """The token's latest full tick (before any event: its state at the start, what
        a server sends on subscribe); ``None`` for a token not subscribed. A copy: the
        caller may keep or change it."""
        st = self._states.get(token)
        if st is None or not st.emit or st.last_tick is None:
            return None
        tick = st.last_tick
        return copy.copy(tick)

    def advance(self, until: datetime) -> list[Tick]:
        """Every tick with event time in (now, until], by event time then token."""
        until_ms = _to_ms(until)
        if until_ms < self._now_ms:
            raise ValueError(f"cannot advance backwards: {until} is before {self.now}")
        bits = self._slot_bits
        mask = (1 << bits) - 1
        limit = ((until_ms + 1) << bits) - 1
        heap = self._heap
        slots = self._slots
        out: list[Tick] = []
        replace = heapq.heapreplace
        while heap and heap[0] <= limit:
            key = heap[0]
            slot = key & mask
            nxt = slots[slot].event(key >> bits, out)
            if nxt >= 0:
                replace(heap, (nxt << bits) | slot)
            else:
                heapq.heappop(heap)
        self._now_ms = until_ms
        return out

    def ground_truth(self, symbols: Mapping[int, str] | None = None) -> dict[str, Any]:
        """The scenario's labels (:func:`core.scenarios.ground_truth`): per episode its
        window and the alert ids the worker must write; empty without a scenario."""
        if self._scenario is None:
            return {"episodes": []}
        extra = {"seed": self._seed, "start": _from_ms(self._start_ms).isoformat()}
        return ground_truth(self.plans, self._scenario, symbols=symbols, extra=extra)

    # --- scenario -----------------------------------------------------------------------
    def _script(
        self, scenario: Scenario, baselines: Mapping[int, Sequence[float]]
    ) -> list[EpisodePlan]:
        """Plan every episode (sized on the token's baseline, checked against the rules)
        and hand the scripted ones to their drivers as timed prints."""
        plans: list[EpisodePlan] = []
        for episode in scenario.episodes:
            drv = self._states[episode.token]
            assert isinstance(drv, _ScriptedDriver)
            expected = _expected_volume(drv, baselines.get(episode.token))
            plan = plan_episode(
                episode, scenario, expected, base_price=drv.price(drv.ltp_n), tick=drv.tick,
                lot=drv.lot,
            )  # fmt: skip
            if plan.window_start * 1000 <= self._start_ms and plan.minutes:
                raise ScenarioError(
                    f"{episode.name}: starts at {_from_ms(plan.window_start * 1000)}, not "
                    f"after the simulation's start {self.now}"
                )
            plans.append(plan)
            if plan.minutes:
                drv.add_window(plan)
        check_overlaps(plans)
        return plans

    # --- construction -----------------------------------------------------------------
    def _rng(self, key: str) -> random.Random:
        return random.Random(f"tickflow:{self._seed}:{key}")

    def _build(self, subscribed: dict[int, Instrument], resolver: InstrumentMaster) -> None:
        """Create every state: drivers (subscribed or hidden), then derivatives.

        ``resolver`` answers underlying and symbol questions: the master when given,
        else an index over the subscribed instruments.
        """
        start_ms = self._start_ms
        derivatives = [i for i in subscribed.values() if i.is_derivative]
        drivers: dict[int, _Driver] = {}

        def driver_for(inst: Instrument) -> _Driver:
            got = drivers.get(inst.instrument_token)
            if got is None:
                got = self._driver(inst)
                drivers[inst.instrument_token] = got
            return got

        for inst in subscribed.values():
            if not inst.is_derivative:
                driver_for(inst)
        # The market factor and the vol level: NIFTY 50 and India VIX, when known.
        nifty_inst = resolver.by_symbol(*NIFTY_50)
        vix_inst = resolver.by_symbol(*INDIA_VIX)
        nifty = driver_for(nifty_inst) if nifty_inst is not None else None
        vix_drv = driver_for(vix_inst) if vix_inst is not None else None
        vix = vix_drv if isinstance(vix_drv, _Vix) else None

        # Underlyings of derivatives: subscribed or from the master, else synthetic.
        under_of: dict[int, _Driver] = {}
        synthetic: dict[tuple[str, str], list[Instrument]] = {}
        for inst in derivatives:
            under_inst = resolver.underlying(inst.instrument_token)
            if under_inst is not None:
                under_of[inst.instrument_token] = driver_for(under_inst)
            else:
                synthetic.setdefault((inst.exchange, inst.root), []).append(inst)
        for n, key in enumerate(sorted(synthetic)):
            group = synthetic[key]
            token = -(n + 1)
            drv = _Driver(
                token,
                price_step(group[0]),
                _Session(group[0].segment_id),
                self._rng(f"spot:{key[0]}:{key[1]}"),
                "spot",
            )
            drv.fair = _implied_spot(group, start_ms)
            drv.sigma = _SPOT_VOLS.get(group[0].segment_id, 0.2)
            drivers[token] = drv
            for inst in group:
                under_of[inst.instrument_token] = drv

        # Configure drivers (vol, beta to NIFTY) then their start state, NIFTY first
        # because the others read it.
        for token, drv in drivers.items():
            rng = drv.rng
            if isinstance(drv, _Vix):
                drv.configure_vix(nifty)
                continue
            sigma, beta, rate = _driver_params(drv, resolver.get(token), rng)
            anchored = drv is not nifty and drv.kind != "spot"
            drv.configure_vol(sigma, beta, nifty if anchored else None)
            drv.base_rate = drv.rate_now = rate * self._activity / 1000.0
        if vix is not None:
            vix.base_rate = vix.rate_now = 1.0 * self._activity / 1000.0
        order = sorted(drivers.values(), key=lambda d: (d is not nifty, d is vix, d.token))
        for drv in order:
            drv.start_state(start_ms)
        for drv in drivers.values():
            drv.emit = drv.token in subscribed
            self._states[drv.token] = drv

        for inst in derivatives:
            st = self._derivative(inst, under_of[inst.instrument_token], vix)
            st.start_state(start_ms)
            st.emit = True
            self._states[inst.instrument_token] = st

        for token in subscribed:
            self._states[token].initial_tick(start_ms)

    def _driver(self, inst: Instrument) -> _Driver:
        session = _Session(inst.segment_id)
        rng = self._rng(str(inst.instrument_token))
        drv: _Driver
        if (inst.exchange, inst.tradingsymbol) == INDIA_VIX:
            drv = _Vix(inst.instrument_token, price_step(inst), session, rng)
        elif inst.instrument_token in self._scripted:
            drv = _ScriptedDriver(inst.instrument_token, price_step(inst), session, rng, "equity")
        else:
            kind = "index" if inst.is_index else "equity"
            drv = _Driver(inst.instrument_token, price_step(inst), session, rng, kind)
        reference = self._references.get(inst.instrument_token, inst.last_price)
        drv.fair = reference if reference > 0 else 100.0
        drv.lot = max(1, inst.lot_size)
        drv.spread_frac = 0.0
        return drv

    def _derivative(self, inst: Instrument, under: _Driver, vix: _Vix | None) -> _Derivative:
        session = _Session(inst.segment_id)
        expiry_ms = (
            _day_start_ms(inst.expiry.toordinal() - _EPOCH_ORDINAL) + session.close_off
            if inst.expiry is not None
            else _NEVER
        )
        rng = self._rng(str(inst.instrument_token))
        st = _Derivative(inst.instrument_token, price_step(inst), session, rng, under, expiry_ms)
        st.lot = max(1, inst.lot_size)
        st.vix = vix
        st.inv_vix_ref = 1.0 / vix.fair if vix is not None else 1.0
        index_root = inst.root in INDEX_UNDERLYINGS
        t0 = max((expiry_ms - self._start_ms) / _CAL_YEAR_MS, 1.0 / 365.0)
        days = t0 * 365.0
        if inst.is_option:
            st.is_option = True
            st.call = inst.instrument_type == "CE"
            st.strike = inst.strike if inst.strike > 0 else under.fair
            # Rates in events/s: a floor of one per ~4 minutes plus a near-the-money peak.
            st.base_rate = self._activity / 240_000.0
            st.peak_rate = (2.2 if index_root else 0.8) * 240.0
            # Index weeklies trade mostly in their last week; stock options are monthly.
            st.decay_per_year = 365.0 / (7.0 if index_root else 30.0)
            st.mean_lots = 12.0 if index_root else 2.0
            st.spread_frac = 0.0005 if index_root else 0.003
            st.depth_lots = 20 if index_root else 4
            moneyness = math.log(under.fair / st.strike) / (0.2 * math.sqrt(t0))
            lots = (200_000 if index_root else 2_000) * math.exp(-0.5 * moneyness * moneyness)
            st.oi = st.lot * (int(lots / (1.0 + days / 30.0)) + 10 + int(rng.random() * 50))
        else:
            # Near-month futures are the liquid ones; later months trade a fraction.
            liquid = 1.0 / (1.0 + days / 20.0)
            peak = 5.0 if index_root else (3.0 if under.kind == "spot" else 2.0)
            st.base_rate = st.rate_now = self._activity * max(peak * liquid, 0.05) / 1000.0
            st.mean_lots = 4.0 if index_root else 2.0
            st.spread_frac = 0.0
            st.depth_lots = 10
            st.oi = st.lot * int((150_000 if index_root else 20_000) * liquid + 100)
        st.oi_high = st.oi_low = st.oi
        return st


#: Annual vols of synthetic spots by segment: currencies are calm, commodities are not.
_SPOT_VOLS = {3: 0.05, 6: 0.05, 7: 0.25, 8: 0.25}

#: Annual vols of the index underlyings (NIFTY ~ what VIX says; banks and midcaps more).
_INDEX_VOLS = {
    "NIFTY 50": 0.13,
    "NIFTY BANK": 0.15,
    "NIFTY FIN SERVICE": 0.15,
    "NIFTY MID SELECT": 0.18,
    "NIFTY NEXT 50": 0.17,
    "SENSEX": 0.13,
    "BANKEX": 0.15,
}


def _driver_params(
    drv: _Driver, inst: Instrument | None, rng: random.Random
) -> tuple[float, float, float]:
    """(annual vol, beta to NIFTY, ticks per second on average) for a driver."""
    if drv.kind == "spot" or inst is None:
        return drv.sigma, 0.0, 1.5
    if drv.kind == "index":
        sigma = _INDEX_VOLS.get(inst.tradingsymbol, 0.14 + 0.06 * rng.random())
        return sigma, 0.7 + 0.5 * rng.random(), 1.0
    sigma = 0.2 + 0.2 * rng.random()
    beta = 0.6 + 0.7 * rng.random()
    # NSE carries most of India's cash volume; the BSE line of the same stock is quiet.
    # (Liquidity depends only on the instrument, never on what else is subscribed.)
    rate = 0.6 + 1.0 * rng.random() if inst.exchange == "NSE" else 0.05 + 0.3 * rng.random()
    # Retail-size prints in rupees: ~2 lakh a print for liquid names, fewer shares when
    # the price is high.
    drv.mean_lots = max(1.0, 200_000.0 * rate / max(drv.fair, 1.0) / 2.0)
    drv.depth_lots = max(2, int(drv.mean_lots))
    return sigma, beta, rate


def _implied_spot(group: Iterable[Instrument], ref_ms: int | None) -> float:
    """A spot level for derivatives without an underlying row: the near future's price
    less carry to ``ref_ms`` (none if ``None``), else the middle strike, else 100."""
    members = list(group)
    futures = [i for i in members if i.is_future and i.last_price > 0]
    if futures:
        near = min(futures, key=lambda i: i.expiry or date.max)
        t = 0.0
        if near.expiry is not None and ref_ms is not None:
            expiry_ms = _day_start_ms(near.expiry.toordinal() - _EPOCH_ORDINAL)
            t = max((expiry_ms - ref_ms) / _CAL_YEAR_MS, 0.0)
        return near.last_price * math.exp(-RISK_FREE_RATE * t)
    strikes = sorted(i.strike for i in members if i.is_option and i.strike > 0)
    if strikes:
        return strikes[len(strikes) // 2]
    return 100.0


# ----------------------------------------------------------------------------------------
# Universe selection.

#: How interesting each index's option chains are (lower first): NIFTY is the market.
_INDEX_CHAIN_WEIGHT = {"NIFTY": 0.15, "SENSEX": 0.3, "BANKNIFTY": 0.3}

#: Indices in order of interest; the rest follow by token.
_KEY_INDICES = (
    NIFTY_50,
    INDIA_VIX,
    ("NSE", "NIFTY BANK"),
    ("BSE", "SENSEX"),
    ("NSE", "NIFTY FIN SERVICE"),
    ("NSE", "NIFTY MID SELECT"),
    ("BSE", "BANKEX"),
    ("NSE", "NIFTY NEXT 50"),
)


def select_universe(
    master: InstrumentMaster, n: int, *, as_of: date | None = None
) -> list[Instrument]:
    """The ``n`` most interesting instruments, deterministically.

    Indices come first (NIFTY 50 and India VIX at the head, so even a tiny universe has
    the market factor and the regime input); then, by a score, F&O underlyings, near
    futures (MCX and currency too, so every price divisor is exercised) and option
    strikes by distance from the money, index chains and near expiries before stock
    chains and far ones, then the remaining cash equities. A derivative always brings
    its underlying in ahead of it, so the Greeks stage never sees an option without its
    spot. ``as_of`` drops contracts that expired before that date. Kite allows 9000
    tokens per API key; ``n`` beyond the master returns the whole master, ordered.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    live = [
        i
        for i in master
        if not (as_of is not None and i.is_derivative and i.expiry is not None and i.expiry < as_of)
    ]
    position = {i.instrument_token: k for k, i in enumerate(live)}
    key_rank = {sym: k for k, sym in enumerate(_KEY_INDICES)}

    # Rank underlyings: index roots first, then stocks in master order.
    roots: dict[tuple[str, str], Instrument] = {}
    for inst in live:
        if inst.is_derivative:
            roots.setdefault((inst.exchange, inst.root), inst)
    fno_cash = {master.underlying_token(i.instrument_token) for i in roots.values()} - {None}
    stock_rank: dict[int, int] = {}
    for inst in live:
        if inst.instrument_token in fno_cash and not inst.is_index:
            stock_rank[inst.instrument_token] = len(stock_rank)

    expiries: dict[tuple[str, str, str], list[date]] = {}
    for inst in live:
        if inst.is_derivative and inst.expiry is not None:
            kind = "OPT" if inst.is_option else "FUT"
            expiries.setdefault((inst.exchange, inst.root, kind), []).append(inst.expiry)
    expiry_rank = {k: {e: r for r, e in enumerate(sorted(set(v)))} for k, v in expiries.items()}

    spot_cache: dict[tuple[str, str], float] = {}

    def spot_of(inst: Instrument) -> float:
        key = (inst.exchange, inst.root)
        if key not in spot_cache:
            under = master.underlying(inst.instrument_token)
            if under is not None and under.last_price > 0:
                spot_cache[key] = under.last_price
            else:
                spot_cache[key] = _implied_spot(
                    [i for i in live if i.is_derivative and (i.exchange, i.root) == key], None
                )
        return spot_cache[key]

    # Strike distance from the money, in strike steps, per chain.
    strike_rank: dict[int, int] = {}
    chains: dict[tuple[str, str, date | None], list[Instrument]] = {}
    for inst in live:
        if inst.is_option:
            chains.setdefault((inst.exchange, inst.root, inst.expiry), []).append(inst)
    for (_, _, _), chain in chains.items():
        spot = spot_of(chain[0])
        strikes = sorted({i.strike for i in chain}, key=lambda k: (abs(k - spot), k))
        rank = {k: r for r, k in enumerate(strikes)}
        for i in chain:
            strike_rank[i.instrument_token] = rank[i.strike]

    def score(inst: Instrument) -> tuple[float, int]:
        """Lower is more interesting; the tie-break is master order."""
        pos = position[inst.instrument_token]
        if inst.is_index:
            return (0.0, key_rank.get((inst.exchange, inst.tradingsymbol), 100) * 10**6 + pos)
        if not inst.is_derivative:
            rank = stock_rank.get(inst.instrument_token)
            if rank is not None:
                return (1.0 + rank / 25.0, pos)
            return (6.0 + (0.0 if inst.exchange == "NSE" else 2.0), pos)
        kind = "OPT" if inst.is_option else "FUT"
        e_rank = expiry_rank.get((inst.exchange, inst.root, kind), {}).get(
            inst.expiry or date.max, 0
        )
        under = master.underlying_token(inst.instrument_token)
        if inst.root in INDEX_UNDERLYINGS:
            weight = _INDEX_CHAIN_WEIGHT.get(inst.root, 0.6)
            future_weight = 0.5
        elif under is None:  # MCX, currencies: few contracts, and each segment matters
            weight = future_weight = 1.0
        else:
            weight = future_weight = 1.5 + stock_rank.get(under, 100) / 25.0
        if inst.is_future:
            return (future_weight * (1.0 + 2.0 * e_rank), pos)
        return (weight * (1.0 + e_rank) * (1.0 + strike_rank[inst.instrument_token]), pos)

    chosen: list[Instrument] = []
    taken: set[int] = set()
    for inst in sorted(live, key=score):
        if len(chosen) >= n:
            break
        if inst.instrument_token in taken:
            continue
        if inst.is_derivative:
            under = master.underlying(inst.instrument_token)
            if under is not None and under.instrument_token not in taken:
                if len(chosen) + 2 > n:
                    continue
                chosen.append(under)
                taken.add(under.instrument_token)
        chosen.append(inst)
        taken.add(inst.instrument_token)
    return chosen
