"""The market simulator: deterministic, chop-independent, and realistic where it counts."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import pytest

from config.instruments import Instrument, InstrumentMaster
from core.market_simulator import (
    IST,
    RISK_FREE_RATE,
    VIX_CAP,
    VIX_FLOOR,
    MarketSimulator,
    black_scholes,
    intraday_profile,
    price_step,
    select_universe,
    smile_iv,
)
from core.sessions import session_bounds
from core.tick import Tick

NIFTY, VIX, RELIANCE = 256265, 264969, 738561
WED = date(2026, 11, 25)  # a Wednesday, the day after the bundled master's reference date


def at(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=IST)


def local(ts: int | None) -> datetime:
    assert ts is not None
    return datetime.fromtimestamp(ts, IST)


@pytest.fixture(scope="module")
def master() -> InstrumentMaster:
    return InstrumentMaster.load()


def pick(master: InstrumentMaster, *symbols: tuple[str, str]) -> list[Instrument]:
    out = []
    for exchange, symbol in symbols:
        inst = master.by_symbol(exchange, symbol)
        assert inst is not None, symbol
        out.append(inst)
    return out


@pytest.fixture(scope="module")
def mixed(master: InstrumentMaster) -> list[Instrument]:
    """A small universe touching every kind: indices, equities, futures, options, CDS, MCX."""
    return pick(
        master,
        ("NSE", "NIFTY 50"),
        ("NSE", "INDIA VIX"),
        ("NSE", "RELIANCE"),
        ("NSE", "SBIN"),
        ("BSE", "RELIANCE"),
        ("NFO", "NIFTY26DECFUT"),
        ("NFO", "RELIANCE26DECFUT"),
        ("NFO", "NIFTY26D0126150CE"),
        ("NFO", "NIFTY26D0126150PE"),
        ("NFO", "NIFTY26D0127000CE"),
        ("NFO", "RELIANCE26DEC1520CE"),
        ("CDS", "USDINR26DECFUT"),
        ("MCX", "CRUDEOIL26DECFUT"),
        ("MCX", "GOLD26DECFUT"),
    )


def run(
    instruments: Sequence[Instrument],
    start: datetime,
    end: datetime,
    *,
    seed: int = 7,
    step: timedelta | None = None,
    master: InstrumentMaster | None = None,
) -> tuple[MarketSimulator, list[Tick]]:
    sim = MarketSimulator(instruments, seed, start, master=master)
    if step is None:
        return sim, sim.advance(end)
    ticks: list[Tick] = []
    t = start
    while t < end:
        t = min(t + step, end)
        ticks += sim.advance(t)
    return sim, ticks


def snap(sim: MarketSimulator, token: int) -> Tick:
    tick = sim.snapshot(token)
    assert tick is not None
    return tick


def _on_grid(price: float, step: float) -> bool:
    """On the grid, and the double nearest its decimal: 26000.05, not 26000.050000000003
    (the value is written to Redis as text)."""
    n = price / step
    decimals = len(repr(step).split(".")[1].rstrip("0")) if step < 1 else 0
    return abs(n - round(n)) < 1e-6 and price == round(price, decimals)


# --- pricing functions ----------------------------------------------------------------------


def test_black_scholes_reference_values() -> None:
    # Hull's textbook example: S=K=100, T=1, r=5 %, vol=20 %.
    call = black_scholes(100, 100, 1.0, 0.2, call=True, rate=0.05)
    put = black_scholes(100, 100, 1.0, 0.2, call=False, rate=0.05)
    assert call == pytest.approx(10.4506, abs=1e-4)
    assert put == pytest.approx(5.5735, abs=1e-4)
    assert black_scholes(120, 100, 0.0, 0.2, call=True) == 20.0  # at expiry: intrinsic
    assert black_scholes(120, 100, 0.0, 0.2, call=False) == 0.0


def test_smile_is_put_skewed_and_bounded() -> None:
    atm = smile_iv(0.15, 100, 100, 0.1)
    assert atm == pytest.approx(0.15)
    assert smile_iv(0.15, 100, 90, 0.1) > smile_iv(0.15, 100, 110, 0.1) > atm * 0.6
    assert smile_iv(0.15, 100, 50, 0.01) == pytest.approx(0.45)  # capped at 3x


def test_profile_is_u_shaped_with_mean_one() -> None:
    xs = [i / 1000 for i in range(1001)]
    mean = sum(intraday_profile(x) for x in xs) / len(xs)
    assert mean == pytest.approx(1.0, rel=1e-2)
    assert intraday_profile(0.0) > 4 * intraday_profile(0.5) < intraday_profile(1.0)


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_same_ticks_different_seed_different(mixed: list[Instrument]) -> None:
    start, end = at(WED, 10, 0), at(WED, 10, 3)
    _, a = run(mixed, start, end, seed=11)
    _, b = run(mixed, start, end, seed=11)
    _, c = run(mixed, start, end, seed=12)
    assert len(a) > 1000
    assert a == b
    assert a != c
    assert [t.last_price for t in a[:50]] != [t.last_price for t in c[:50]]


def test_output_does_not_depend_on_how_time_is_chopped(
    master: InstrumentMaster, mixed: list[Instrument]
) -> None:
    universe = select_universe(master, 100, as_of=WED) + mixed
    start, end = at(WED, 15, 28), at(WED, 15, 31)  # across the NSE close too
    one_sim, one = run(universe, start, end)
    sec_sim, by_second = run(universe, start, end, step=timedelta(seconds=1))
    odd_sim, odd = run(universe, start, end, step=timedelta(milliseconds=737))
    assert len(one) > 2000
    assert one == by_second
    assert one == odd
    for token in one_sim.tokens:
        assert one_sim.snapshot(token) == sec_sim.snapshot(token) == odd_sim.snapshot(token)


def test_ticks_are_ordered_and_inside_the_window(mixed: list[Instrument]) -> None:
    start = at(WED, 11, 0)
    sim = MarketSimulator(mixed, 3, start)
    assert sim.now == start
    t1 = start + timedelta(seconds=30)
    first = sim.advance(t1)
    second = sim.advance(t1 + timedelta(seconds=30))
    assert sim.now == t1 + timedelta(seconds=30)
    assert sim.advance(sim.now) == []
    for ticks, lo, hi in ((first, start, t1), (second, t1, sim.now)):
        stamps = [t.exchange_timestamp or 0 for t in ticks]
        assert stamps == sorted(stamps)
        assert all(lo.timestamp() <= s <= hi.timestamp() for s in stamps)
    with pytest.raises(ValueError, match="backwards"):
        sim.advance(start)
    with pytest.raises(ValueError, match="timezone"):
        sim.advance(datetime(2026, 11, 25, 12, 0))


def test_subscribed_paths_do_not_depend_on_the_rest_of_the_universe(
    master: InstrumentMaster,
) -> None:
    """With the master, an instrument's ticks are the same in a small and a large universe."""
    start, end = at(WED, 10, 0), at(WED, 10, 2)
    small = pick(master, ("NSE", "NIFTY 50"), ("NFO", "NIFTY26D0126150CE"))
    large = select_universe(master, 400, as_of=WED)
    assert {i.instrument_token for i in small} <= {i.instrument_token for i in large}
    _, a = run(small, start, end, master=master)
    _, b = run(large, start, end, master=master)
    for token in (NIFTY, small[1].instrument_token):
        mine = [t for t in a if t.instrument_token == token]
        assert mine
        assert mine == [t for t in b if t.instrument_token == token]


# --- tick contents ------------------------------------------------------------------------


def test_full_mode_ticks_are_complete_and_consistent(mixed: list[Instrument]) -> None:
    universe = {i.instrument_token: i for i in mixed}
    sim, ticks = run(mixed, at(WED, 9, 10), at(WED, 9, 40))
    assert {t.instrument_token for t in ticks} == set(universe)
    last_volume: dict[int, int] = {}
    for t in ticks:
        inst = universe[t.instrument_token]
        step = price_step(inst)
        assert t.mode == "full"
        assert t.open is not None and t.high is not None and t.low is not None
        assert t.close is not None and t.change is not None
        for p in (t.last_price, t.open, t.high, t.low, t.close):
            assert p > 0 and _on_grid(p, step), t
        assert t.high >= t.last_price >= t.low
        assert t.high >= t.open >= t.low
        assert t.change == pytest.approx((t.last_price - t.close) / t.close * 100)
        assert isinstance(t.exchange_timestamp, int)
        if inst.is_index:
            assert not t.tradable and t.depth is None and t.volume_traded is None
            assert t.last_trade_time is None and t.oi is None
            continue
        assert t.tradable
        assert t.last_traded_quantity is not None and t.average_traded_price is not None
        assert t.volume_traded is not None and t.total_buy_quantity is not None
        assert t.total_sell_quantity is not None and t.last_trade_time is not None
        assert t.oi is not None and t.oi_day_high is not None and t.oi_day_low is not None
        assert t.last_trade_time == t.exchange_timestamp
        assert t.volume_traded > 0 and t.last_traded_quantity % inst.lot_size == 0
        assert t.low <= t.average_traded_price <= t.high
        # Day volume only rises.
        assert t.volume_traded >= last_volume.get(t.instrument_token, 0)
        last_volume[t.instrument_token] = t.volume_traded
        if inst.is_derivative:
            assert 0 <= t.oi_day_low <= t.oi <= t.oi_day_high
        else:
            assert t.oi == 0
        # The book: five levels a side around the last price, best first, on the grid.
        bids, asks = t.bids, t.asks
        assert len(bids) == len(asks) == 5
        live_bids = [lv for lv in bids if lv.quantity]
        bid_prices = [lv.price for lv in live_bids]
        assert bid_prices == sorted(bid_prices, reverse=True)
        assert [lv.price for lv in asks] == sorted(lv.price for lv in asks)
        assert live_bids[0].price <= t.last_price <= asks[0].price
        assert live_bids[0].price < asks[0].price
        for lv in [*live_bids, *asks]:
            assert lv.price > 0 and _on_grid(lv.price, step), t
            assert lv.quantity % inst.lot_size == 0
            assert 1 <= lv.orders <= lv.quantity
    # The cached tick is the last one emitted, and a copy.
    for token in sim.tokens:
        assert snap(sim, token) == [t for t in ticks if t.instrument_token == token][-1]
        assert snap(sim, token) is not snap(sim, token)
    assert sim.snapshot(1) is None


def test_snapshot_before_any_event_is_a_live_looking_tick(mixed: list[Instrument]) -> None:
    start = at(WED, 12, 0)
    sim = MarketSimulator(mixed, 5, start)
    assert sim.tokens == [i.instrument_token for i in mixed]
    for token in sim.tokens:
        tick = snap(sim, token)
        assert tick.mode == "full"
        assert tick.exchange_timestamp == int(start.timestamp())
    rel = snap(sim, RELIANCE)
    assert rel.tradable and rel.volume_traded is not None and rel.volume_traded > 100_000
    assert len(rel.bids) == 5
    index = snap(sim, NIFTY)
    assert not index.tradable and index.close == 26150.0  # the master's reference level


def test_no_ticks_outside_each_segments_session(mixed: list[Instrument]) -> None:
    friday, monday = date(2026, 11, 27), date(2026, 11, 30)
    _, ticks = run(mixed, at(friday, 15, 25), at(monday, 9, 20))
    sessions = {"NSE": ((9, 15, 0), (15, 30, 0)), "CDS": ((9, 0, 0), (17, 0, 0))}
    sessions["MCX"] = ((9, 0, 0), (23, 30, 0))
    seen = defaultdict(set)
    by_token = {i.instrument_token: i for i in mixed}
    for t in ticks:
        when = local(t.exchange_timestamp)
        inst = by_token[t.instrument_token]
        kind = inst.exchange if inst.exchange in ("CDS", "MCX") else "NSE"
        opens, closes = sessions[kind]
        assert when.weekday() < 5, t
        assert opens <= (when.hour, when.minute, when.second) <= closes, (kind, when)
        seen[kind].add(when.date())
    assert seen == {"NSE": {friday, monday}, "CDS": {friday, monday}, "MCX": {friday, monday}}


def test_new_session_resets_the_day(mixed: list[Instrument]) -> None:
    _, ticks = run(mixed, at(WED, 15, 20), at(WED + timedelta(days=1), 9, 30))
    for token in (NIFTY, RELIANCE):
        own = [t for t in ticks if t.instrument_token == token]
        before = [t for t in own if local(t.exchange_timestamp).date() == WED]
        after = [t for t in own if local(t.exchange_timestamp).date() != WED]
        assert before and after
        assert after[0].close == before[-1].last_price
        assert all(t.close == after[0].close for t in after)
        assert after[0].open == after[0].last_price
        if token == RELIANCE:
            assert after[0].volume_traded is not None and before[-1].volume_traded is not None
            assert after[0].volume_traded < before[-1].volume_traded


def test_expired_options_stop_ticking(master: InstrumentMaster) -> None:
    expiring = pick(master, ("NSE", "NIFTY 50"), ("NFO", "NIFTY26D0126150CE"))
    _, ticks = run(expiring, at(date(2026, 12, 1), 15, 0), at(date(2026, 12, 2), 10, 0))
    option = [t for t in ticks if t.instrument_token == expiring[1].instrument_token]
    assert option
    assert max(local(t.exchange_timestamp) for t in option) <= at(date(2026, 12, 1), 15, 30)
    assert any(local(t.exchange_timestamp).date() == date(2026, 12, 2) for t in ticks)


# --- market realism -------------------------------------------------------------------------


def _volume_per_minute(instruments: list[Instrument], start: datetime) -> float:
    _, ticks = run(instruments, start, start + timedelta(minutes=30))
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in ticks:
        assert t.volume_traded is not None and t.last_traded_quantity is not None
        first.setdefault(t.instrument_token, t.volume_traded - t.last_traded_quantity)
        last[t.instrument_token] = t.volume_traded
    return sum(last[k] - first[k] for k in last) / 30.0


def test_intraday_volume_is_u_shaped(master: InstrumentMaster) -> None:
    stocks = pick(master, *(("NSE", s) for s in ("RELIANCE", "HDFCBANK", "INFY", "SBIN", "TCS")))
    opening = _volume_per_minute(stocks, at(WED, 9, 15))
    midday = _volume_per_minute(stocks, at(WED, 12, 15))
    closing = _volume_per_minute(stocks, at(WED, 15, 0))
    assert opening > 2 * midday
    assert closing > 2 * midday


def test_tick_rates_follow_liquidity(master: InstrumentMaster) -> None:
    nifty_chain = master.options_chain("NIFTY", date(2026, 12, 1))
    atm = [i for i in nifty_chain if i.strike == 26150.0]
    far = [i for i in nifty_chain if i.strike in (24000.0, 28500.0)]
    assert len(atm) == 2 and len(far) == 4
    liquid = [*pick(master, ("NSE", "RELIANCE")), *atm]
    universe = [*pick(master, ("NSE", "NIFTY 50")), *liquid, *far]
    _, ticks = run(universe, at(WED, 11, 0), at(WED, 11, 30))
    per_second: dict[int, float] = defaultdict(float)
    for t in ticks:
        per_second[t.instrument_token] += 1 / 1800
    for inst in liquid:
        assert 0.3 <= per_second[inst.instrument_token] <= 4.0, inst.tradingsymbol
    for inst in far:  # far out of the money: minutes apart
        assert per_second[inst.instrument_token] < 1 / 60, inst.tradingsymbol


def _corr(xy: list[tuple[float, float]]) -> float:
    n = len(xy)
    mx = sum(x for x, _ in xy) / n
    my = sum(y for _, y in xy) / n
    sxy = sum((x - mx) * (y - my) for x, y in xy)
    sxx = sum((x - mx) ** 2 for x, _ in xy)
    syy = sum((y - my) ** 2 for _, y in xy)
    return sxy / math.sqrt(sxx * syy)


def test_options_follow_their_underlying(master: InstrumentMaster) -> None:
    call, put = pick(master, ("NFO", "NIFTY26D0826150CE"), ("NFO", "NIFTY26D0826150PE"))
    universe = [*pick(master, ("NSE", "NIFTY 50"), ("NSE", "INDIA VIX")), call, put]
    start = at(WED, 9, 15)
    sim = MarketSimulator(universe, 21, start)
    spot = snap(sim, NIFTY).last_price
    pairs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for minute in range(1, 121):
        for t in sim.advance(start + timedelta(minutes=minute)):
            if t.instrument_token == NIFTY:
                spot = t.last_price
            else:
                pairs[t.instrument_token].append((spot, t.last_price))
    assert len(pairs[call.instrument_token]) > 500
    assert _corr(pairs[call.instrument_token]) > 0.9  # the call rises with NIFTY
    assert _corr(pairs[put.instrument_token]) < -0.9  # the put falls

    # Put-call parity on the cached ticks: C - P = S - K exp(-rT), to within the spreads
    # and the few seconds between the three last prints.
    s = snap(sim, NIFTY).last_price
    c = snap(sim, call.instrument_token).last_price
    p = snap(sim, put.instrument_token).last_price
    years = (at(date(2026, 12, 8), 15, 30) - sim.now).total_seconds() / (365 * 86400)
    assert c - p == pytest.approx(s - 26150.0 * math.exp(-RISK_FREE_RATE * years), abs=0.001 * s)


def test_futures_trade_at_carry_over_spot(master: InstrumentMaster) -> None:
    fut = master.by_symbol("NFO", "NIFTY27JANFUT")
    assert fut is not None and fut.expiry is not None
    universe = [*pick(master, ("NSE", "NIFTY 50")), fut]
    sim, _ = run(universe, at(WED, 10, 0), at(WED, 10, 30))
    spot = snap(sim, NIFTY).last_price
    price = snap(sim, fut.instrument_token).last_price
    years = (at(fut.expiry, 15, 30) - sim.now).total_seconds() / (365 * 86400)
    assert price == pytest.approx(spot * math.exp(RISK_FREE_RATE * years), rel=0.001)
    assert price > spot


def test_vix_stays_in_range_and_moves_against_nifty(master: InstrumentMaster) -> None:
    universe = pick(master, ("NSE", "NIFTY 50"), ("NSE", "INDIA VIX"))
    start = at(WED, 9, 15)
    sim = MarketSimulator(universe, 8, start)
    levels: dict[int, dict[int, float]] = {NIFTY: {}, VIX: {}}
    for minute in range(1, 376):
        for t in sim.advance(start + timedelta(minutes=minute)):
            levels[t.instrument_token][minute] = t.last_price
    assert all(VIX_FLOOR <= v <= VIX_CAP for v in levels[VIX].values())
    minutes = sorted(set(levels[NIFTY]) & set(levels[VIX]))
    assert len(minutes) > 300
    pairs = list(itertools.pairwise(minutes))
    rn = [math.log(levels[NIFTY][b] / levels[NIFTY][a]) for a, b in pairs]
    rv = [math.log(levels[VIX][b] / levels[VIX][a]) for a, b in pairs]
    assert _corr(list(zip(rn, rv, strict=True))) < -0.2
    # NIFTY's realised vol is about what VIX says (13 %), within a factor of two.
    vol = math.sqrt(sum(x * x for x in rn) / len(rn)) * math.sqrt(375 * 252)
    assert 0.065 < vol < 0.26


def test_activity_scales_the_tick_rate(mixed: list[Instrument]) -> None:
    start, end = at(WED, 11, 0), at(WED, 11, 1)
    calm = MarketSimulator(mixed, 1, start).advance(end)
    busy = MarketSimulator(mixed, 1, start, activity=3.0).advance(end)
    assert 2.0 < len(busy) / len(calm) < 4.0


# --- universe ------------------------------------------------------------------------------


def test_select_universe_sizes_and_order(master: InstrumentMaster) -> None:
    assert select_universe(master, 0) == []
    assert [i.instrument_token for i in select_universe(master, 2)] == [NIFTY, VIX]
    full = select_universe(master, 9000, as_of=WED)
    assert len(full) == 9000
    assert len({i.instrument_token for i in full}) == 9000
    assert select_universe(master, 9000, as_of=WED) == full  # deterministic
    indices = [i for i in master if i.is_index]
    assert all(i.is_index for i in full[: len(indices)])
    assert all(i.expiry is None or i.expiry >= WED for i in full)
    assert len(select_universe(master, 10**6)) == len(master)
    with pytest.raises(ValueError):
        select_universe(master, -1)


def test_select_universe_brings_underlyings_and_the_money_first(master: InstrumentMaster) -> None:
    for n in (50, 300, 3000):
        universe = select_universe(master, n, as_of=WED)
        assert len(universe) == n
        tokens = {i.instrument_token for i in universe}
        position = {i.instrument_token: k for k, i in enumerate(universe)}
        for inst in universe:
            under = master.underlying_token(inst.instrument_token)
            if under is not None:
                assert under in tokens and position[under] < position[inst.instrument_token]
        kinds = {"opt" if i.is_option else "fut" if i.is_future else "cash" for i in universe}
        assert kinds == {"opt", "fut", "cash"}, n
    small = select_universe(master, 300, as_of=WED)
    nifty_near = [i for i in small if i.root == "NIFTY" and i.expiry == date(2026, 12, 1)]
    assert nifty_near
    assert all(abs(i.strike - 26150.0) <= 1000 for i in nifty_near if i.is_option)
    assert {"CDS", "MCX"} <= {i.exchange for i in small}


def test_full_universe_ticks_at_a_realistic_rate_at_the_open(master: InstrumentMaster) -> None:
    """9000 tokens at the open, the busiest time (its cost is in bench.bench_market_simulator)."""
    universe = select_universe(master, 9000, as_of=WED)
    start = at(WED, 9, 15)
    sim = MarketSimulator(universe, 7, start, master=master)
    ticks = sim.advance(start + timedelta(seconds=10))
    assert 20_000 < len(ticks) < 9000 * 4 * 10  # busy, but at most 4 ticks/s per token
    assert len({t.instrument_token for t in ticks}) > 3000


def test_session_bounds_per_segment() -> None:
    assert session_bounds(2, WED) == (at(WED, 9, 15), at(WED, 15, 30))  # NFO
    assert session_bounds(3, WED) == (at(WED, 9, 0), at(WED, 17, 0))  # CDS
    assert session_bounds(7, WED) == (at(WED, 9, 0), at(WED, 23, 30))  # MCX
    assert session_bounds(9, WED) == session_bounds(1, WED)  # indices trade with NSE
