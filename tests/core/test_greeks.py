"""Option Greeks (core.greeks): against vollib (Let's Be Rational and its analytical Greeks),
Hull's textbook example, put-call parity, and the scalar path against the chain path.

vollib is the oracle: every reference number below comes from it (or from Hull), never
from the module under test.
"""

from __future__ import annotations

import calendar
import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from typing import Any

import numpy as np
import pytest
from vollib.black import black as vollib_black76_price
from vollib.black.greeks import analytical as black76_analytical
from vollib.black.implied_volatility import implied_volatility as vollib_black76_iv
from vollib.black_scholes import black_scholes as vollib_bs_price
from vollib.black_scholes.greeks import analytical as bs_analytical
from vollib.black_scholes.implied_volatility import implied_volatility as vollib_bs_iv

from config.instruments import Instrument
from core import greeks
from core.greeks import (
    ERR_ABOVE_MAXIMUM,
    ERR_BELOW_INTRINSIC,
    ERR_EXPIRED,
    ERR_INVALID,
    ERR_NO_IV,
    ERR_NO_PRICE,
    ERR_NO_UNDERLYING,
    GREEKS_FIELDS,
    REASONS,
    SECONDS_PER_YEAR,
    GreeksResult,
    Model,
    RateLimiter,
    chain_greeks,
    compute_greeks,
    expiry_epoch,
    greeks_for_tick,
    greeks_vec,
    implied_volatility_vec,
    option_price_from_quote,
    option_price_from_tick,
    price_vec,
    scalar_greeks,
    should_compute,
    time_to_expiry,
)
from core.tick import Depth, DepthLevel, Tick
from core.timeutil import IST

EXPIRY = date(2026, 1, 29)  # a Thursday
R = 0.065
SPOT = 22_000.0
GREEK_NAMES = ("delta", "gamma", "theta", "vega", "rho")

# The grid: deep ITM to deep OTM, five minutes to a year, 5% to 150% volatility.
MONEYNESS = (0.5, 0.7, 0.85, 0.95, 0.99, 1.0, 1.01, 1.05, 1.2, 1.5, 2.0)  # strike / spot
EXPIRIES = (5 / 525_600, 1 / 8760, 1 / 365, 7 / 365, 30 / 365, 91 / 365, 1.0)  # years
VOLS = (0.05, 0.15, 0.3, 0.6, 1.0, 1.5)
MODELS: tuple[Model, ...] = ("black_scholes", "black76")


def event_at(t_years: float, expiry: date = EXPIRY) -> float:
    """The event time that leaves ``t_years`` to expiry (to float rounding)."""
    return expiry_epoch(expiry) - t_years * SECONDS_PER_YEAR


def ref_price(model: Model, flag: str, u: float, k: float, t: float, r: float, vol: float) -> float:
    if model == "black_scholes":
        return float(vollib_bs_price(flag, u, k, t, r, vol))
    return float(vollib_black76_price(flag, u, k, t, r, vol))


def ref_iv(model: Model, price: float, u: float, k: float, t: float, r: float, flag: str) -> float:
    """vollib's Let's Be Rational IV, or NaN where it raises or returns no volatility."""
    try:
        if model == "black_scholes":
            value = float(vollib_bs_iv(price, u, k, t, r, flag))
        else:
            value = float(vollib_black76_iv(price, u, k, r, t, flag))
    except Exception:
        return math.nan
    return value if math.isfinite(value) and value > 0 else math.nan


def ref_greeks(
    model: Model, flag: str, u: float, k: float, t: float, r: float, vol: float
) -> tuple[float, ...]:
    module = bs_analytical if model == "black_scholes" else black76_analytical
    return tuple(float(getattr(module, name)(flag, u, k, t, r, vol)) for name in GREEK_NAMES)


def close(a: float, b: float, tol: float) -> bool:
    """|a - b| <= tol, relative for magnitudes above 1 (theta, vega, rho of a NIFTY
    option are tens to hundreds of rupees)."""
    return abs(a - b) <= tol * max(1.0, abs(b))


def grid() -> Iterator[tuple[Model, str, float, float, float]]:
    for model, flag, m, t, vol in itertools.product(MODELS, "cp", MONEYNESS, EXPIRIES, VOLS):
        yield model, flag, SPOT * m, t, vol


def assert_clean(result: GreeksResult) -> None:
    """No NaN or inf anywhere in the hash; Greeks empty exactly when there is an error."""
    out = result.to_redis()
    assert tuple(out) == GREEKS_FIELDS
    for value in out.values():
        assert "nan" not in value.lower() and "inf" not in value.lower()
    for name in ("iv", *GREEK_NAMES):
        if result.error:
            assert out[name] == ""
        else:
            assert math.isfinite(float(out[name]))


# --- textbook and vollib parity -----------------------------------------------------------


def test_hull_textbook_example() -> None:
    """Hull, Options, Futures and Other Derivatives: S=49, K=50, r=5%, sigma=20%, 20 weeks."""
    t = 0.3846
    price = ref_price("black_scholes", "c", 49.0, 50.0, t, 0.05, 0.2)
    assert price == pytest.approx(2.40, abs=0.005)
    result = compute_greeks(
        option_price=price, underlying_price=49.0, strike=50.0, expiry=EXPIRY,
        is_call=True, event_time=event_at(t), rate=0.05,
    )  # fmt: skip
    assert result.ok, result.error
    assert result.time_to_expiry_years == pytest.approx(t, rel=1e-12)
    assert result.iv == pytest.approx(0.2, abs=1e-12)
    assert result.delta == pytest.approx(0.522, abs=5e-4)
    assert result.gamma == pytest.approx(0.066, abs=5e-4)
    assert result.vega == pytest.approx(12.1 / 100, abs=5e-4)  # per volatility point
    assert result.theta is not None and result.theta * 365 == pytest.approx(-4.31, abs=5e-3)
    assert result.rho == pytest.approx(0.0891, abs=1e-4)  # per 1% of rate


def test_scalar_greeks_equal_vollib_analytical_at_given_volatility() -> None:
    """The formulas alone (no IV): vollib's five functions, to 1e-12."""
    for model, flag, k, t, vol in grid():
        ours = scalar_greeks(model, flag == "c", SPOT, k, t, R, vol)
        ref = ref_greeks(model, flag, SPOT, k, t, R, vol)
        for name, a, b in zip(GREEK_NAMES, ours, ref, strict=True):
            assert close(a, b, 1e-12), (name, model, flag, k, t, vol, a, b)


def test_per_tick_path_matches_vollib_across_the_grid() -> None:
    """Price from vollib at a known volatility -> our IV and Greeks -> vollib's, to 1e-6
    (IV to 1e-8); where vollib finds no volatility we give a reason and no numbers."""
    solved = 0
    for model, flag, k, t, vol in grid():
        event_time = event_at(t)
        price = ref_price(model, flag, SPOT, k, t, R, vol)
        result = compute_greeks(
            option_price=price, underlying_price=SPOT, strike=k, expiry=EXPIRY,
            is_call=flag == "c", event_time=event_time, rate=R, model=model,
        )  # fmt: skip
        assert_clean(result)
        tt = result.time_to_expiry_years
        assert tt is not None and tt == pytest.approx(t, rel=1e-9)
        iv = ref_iv(model, price, SPOT, k, tt, R, flag)
        case = (model, flag, k, t, vol, price)
        if math.isnan(iv):
            assert result.error, case
            continue
        solved += 1
        assert result.ok, (case, result.error)
        assert result.iv is not None and abs(result.iv - iv) <= 1e-8, (case, result.iv, iv)
        ref = ref_greeks(model, flag, SPOT, k, tt, R, iv)
        for name, b in zip(GREEK_NAMES, ref, strict=True):
            a = getattr(result, name)
            assert close(a, b, 1e-6), (name, case, a, b)
    assert solved > 1000  # the grid is not vacuous


def chain_inputs(model: Model) -> dict[str, Any]:
    cases = list(itertools.product("cp", MONEYNESS, EXPIRIES, VOLS))
    flags = np.array([c[0] for c in cases])
    strikes = np.array([SPOT * c[1] for c in cases])
    ts = np.array([c[2] for c in cases])
    vols = np.array([c[3] for c in cases])
    prices = np.array(
        [
            ref_price(model, f, SPOT, k, t, R, v)
            for f, k, t, v in zip(flags, strikes, ts, vols, strict=True)
        ]
    )
    return {"flags": flags, "strikes": strikes, "ts": ts, "vols": vols, "prices": prices}


@pytest.mark.parametrize("model", MODELS)
def test_chain_path_matches_vollib_across_the_grid(model: Model) -> None:
    """The vectorised solver: IV within 1e-8 of Let's Be Rational wherever that solves,
    Greeks within 1e-6 of vollib's analytical ones, a reason wherever it does not."""
    c = chain_inputs(model)
    chain = chain_greeks(c["prices"], SPOT, c["strikes"], c["ts"], c["flags"], R, model)
    solved = 0
    worst = 0.0
    for i, (flag, k, t, price) in enumerate(
        zip(c["flags"], c["strikes"], c["ts"], c["prices"], strict=True)
    ):
        iv = ref_iv(model, float(price), SPOT, float(k), float(t), R, str(flag))
        if math.isnan(iv):
            assert chain.status[i] != 0 and math.isnan(chain.iv[i]), (i, flag, k, t, price)
            continue
        solved += 1
        assert chain.status[i] == 0, (i, flag, k, t, price, REASONS[chain.status[i]])
        worst = max(worst, abs(chain.iv[i] - iv))
        ref = ref_greeks(model, str(flag), SPOT, float(k), float(t), R, iv)
        for name, b in zip(GREEK_NAMES, ref, strict=True):
            a = float(getattr(chain, name)[i])
            assert close(a, b, 1e-6), (name, flag, k, t, price, a, b)
    assert worst <= 1e-8
    assert solved > 500


@pytest.mark.parametrize("model", MODELS)
def test_random_chain_iv_equals_lets_be_rational(model: Model) -> None:
    """2000 random contracts (seeded): moneyness, 1 minute to 2 years, 3% to 200%."""
    rng = np.random.default_rng(20260129)
    n = 2000
    strikes = SPOT * np.exp(rng.uniform(-0.7, 0.7, n))
    ts = np.exp(rng.uniform(math.log(1 / 525_600), math.log(2.0), n))
    vols = np.exp(rng.uniform(math.log(0.03), math.log(2.0), n))
    flags = np.where(rng.random(n) < 0.5, "c", "p")
    prices = np.array(
        [
            ref_price(model, f, SPOT, k, t, R, v)
            for f, k, t, v in zip(flags, strikes, ts, vols, strict=True)
        ]
    )
    ivs, status = implied_volatility_vec(prices, SPOT, strikes, ts, flags, R, model)
    refs = np.array(
        [
            ref_iv(model, p, SPOT, k, t, R, f)
            for p, k, t, f in zip(prices, strikes, ts, flags, strict=True)
        ]
    )
    solvable = np.isfinite(refs)
    assert solvable.sum() > 800
    assert np.array_equal(status == 0, solvable)
    assert np.max(np.abs(ivs[solvable] - refs[solvable])) <= 1e-8
    assert np.all(np.isnan(ivs[~solvable]))


@pytest.mark.parametrize("model", MODELS)
def test_iv_round_trips_prices(model: Model) -> None:
    """IV then price gives the price back to 1e-8 (rupees), on both paths."""
    c = chain_inputs(model)
    ivs, status = implied_volatility_vec(
        c["prices"], SPOT, c["strikes"], c["ts"], c["flags"], R, model
    )
    ok = status == 0
    assert ok.sum() > 500
    for i in np.flatnonzero(ok):
        flag = str(c["flags"][i])
        k, t, price = (float(c[name][i]) for name in ("strikes", "ts", "prices"))
        assert abs(ref_price(model, flag, SPOT, k, t, R, float(ivs[i])) - price) <= 1e-8
        scalar = compute_greeks(
            option_price=price, underlying_price=SPOT, strike=k, expiry=EXPIRY,
            is_call=flag == "c", event_time=event_at(t), rate=R, model=model,
        )  # fmt: skip
        assert scalar.ok and scalar.iv is not None and scalar.time_to_expiry_years is not None
        again = ref_price(model, flag, SPOT, k, scalar.time_to_expiry_years, R, scalar.iv)
        assert abs(again - price) <= 1e-8
    # and our own vectorised pricer agrees with vollib's
    ours = price_vec(SPOT, c["strikes"], c["ts"], c["flags"], R, c["vols"], model)
    assert np.max(np.abs(ours - c["prices"])) <= 1e-8


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("strike", [18_000.0, 21_500.0, 22_000.0, 23_000.0, 27_000.0])
def test_put_call_parity(model: Model, strike: float) -> None:
    """Prices that satisfy parity give one volatility and Greeks that satisfy parity."""
    t = 30 / 365
    discount = math.exp(-R * t)
    forward = SPOT / discount if model == "black_scholes" else SPOT
    call_price = ref_price(model, "c", SPOT, strike, t, R, 0.18)
    put_price = call_price - discount * (forward - strike)  # C - P = D (F - K)
    event_time = event_at(t)

    def solve(price: float, is_call: bool) -> GreeksResult:
        return compute_greeks(
            option_price=price, underlying_price=SPOT, strike=strike, expiry=EXPIRY,
            is_call=is_call, event_time=event_time, rate=R, model=model,
        )  # fmt: skip

    call, put = solve(call_price, True), solve(put_price, False)
    assert call.ok and put.ok
    assert call.iv == pytest.approx(0.18, abs=1e-9)
    assert put.iv == pytest.approx(0.18, abs=1e-9)
    assert call.iv is not None and put.iv is not None
    tt = call.time_to_expiry_years
    assert tt is not None
    d = math.exp(-R * tt)
    # At one volatility: delta_c - delta_p = 1 (spot) or D (future); gamma and vega equal.
    c_g = scalar_greeks(model, True, SPOT, strike, tt, R, 0.18)
    p_g = scalar_greeks(model, False, SPOT, strike, tt, R, 0.18)
    assert c_g[0] - p_g[0] == pytest.approx(1.0 if model == "black_scholes" else d, abs=1e-12)
    assert c_g[1] == pytest.approx(p_g[1], rel=1e-12)
    assert c_g[3] == pytest.approx(p_g[3], rel=1e-12)
    if model == "black_scholes":  # d/dt and d/dr of S - K e^(-rt)
        assert c_g[2] - p_g[2] == pytest.approx(-R * strike * d / 365, abs=1e-9)
        assert c_g[4] - p_g[4] == pytest.approx(tt * strike * d * 0.01, abs=1e-9)
    # and the solved Greeks agree with those at the given volatility
    for name, a, b in zip(GREEK_NAMES, c_g, (getattr(call, n) for n in GREEK_NAMES), strict=True):
        assert b == pytest.approx(a, rel=1e-7, abs=1e-9), name


@pytest.mark.parametrize("model", MODELS)
def test_chain_equals_per_tick_path(model: Model) -> None:
    """Every field of every element, error reasons included, on a chain with bad rows."""
    strikes = np.array([19_000.0, 21_000.0, 22_000.0, 23_000.0, 25_000.0, 22_000.0, 20_000.0,
                        22_000.0, 22_000.0, 22_000.0, 0.0, 22_000.0])  # fmt: skip
    ts = np.array([7 / 365, 30 / 365, 2 / 365, 91 / 365, 0.5, 30 / 365, 30 / 365, 30 / 365,
                   30 / 365, 30 / 365, 30 / 365, -1e-6])  # fmt: skip
    flags = np.array(["c", "p", "c", "p", "c", "c", "p", "c", "p", "c", "c", "c"])
    prices = np.array([3100.0, 95.5, 180.25, 1320.0, 210.0, 400.0, 0.05, -1.0, math.nan,
                       50_000.0, 10.0, 5.0])  # fmt: skip
    underlying = np.array([SPOT] * 5 + [SPOT, SPOT, SPOT, SPOT, SPOT, SPOT, SPOT])
    underlying[5] = math.nan
    chain = chain_greeks(prices, underlying, strikes, ts, flags, R, model)
    for i in range(len(prices)):
        event_time = event_at(float(ts[i]))
        scalar = compute_greeks(
            option_price=None if math.isnan(prices[i]) else float(prices[i]),
            underlying_price=None if math.isnan(underlying[i]) else float(underlying[i]),
            strike=float(strikes[i]), expiry=EXPIRY, is_call=flags[i] == "c",
            event_time=event_time, rate=R, model=model, underlying_token=256265,
        )  # fmt: skip
        tt = scalar.time_to_expiry_years
        # the chain was given t directly; the per-tick path derives it from event time
        assert tt is not None and tt == pytest.approx(float(ts[i]), rel=1e-9, abs=1e-12)
        vec = chain.result(i, event_time=event_time, underlying_token=256265)
        assert vec.error == scalar.error, i
        assert_clean(vec)
        for name in ("iv", *GREEK_NAMES):
            a, b = getattr(vec, name), getattr(scalar, name)
            if b is None:
                assert a is None
            else:
                assert a == pytest.approx(b, rel=1e-7, abs=1e-10), (i, name)
    assert chain.errors[5] == ERR_NO_UNDERLYING
    assert chain.errors[-1] == ERR_EXPIRED


# --- time to expiry --------------------------------------------------------------------------


def ist(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=IST).timestamp()


def test_time_to_expiry_counts_seconds_to_1530_ist() -> None:
    assert expiry_epoch(EXPIRY) == calendar.timegm((2026, 1, 29, 10, 0, 0))  # 15:30 IST
    assert time_to_expiry(EXPIRY, ist(2026, 1, 29, 10, 0)) == 19_800 / 31_536_000
    assert time_to_expiry(EXPIRY, ist(2026, 1, 29, 15, 29, 59)) == 1 / 31_536_000
    assert time_to_expiry(EXPIRY, ist(2026, 1, 29, 15, 30)) == 0.0
    assert time_to_expiry(EXPIRY, ist(2026, 1, 22, 15, 30)) == 7 / 365
    assert time_to_expiry(EXPIRY, ist(2026, 1, 29, 16, 0)) < 0


def test_expiry_day_before_close_has_greeks_and_after_close_is_expired() -> None:
    k = 22_000.0
    morning = ist(2026, 1, 29, 11, 15)
    t = time_to_expiry(EXPIRY, morning)
    price = ref_price("black_scholes", "c", SPOT, k, t, R, 0.14)
    args: dict[str, Any] = dict(
        option_price=price, underlying_price=SPOT, strike=k, expiry=EXPIRY, is_call=True,
        rate=R,
    )  # fmt: skip
    live = compute_greeks(event_time=morning, **args)
    assert live.ok and live.iv == pytest.approx(0.14, abs=1e-9)
    assert live.gamma is not None and live.gamma > 0
    last_second = compute_greeks(event_time=ist(2026, 1, 29, 15, 29, 59), **args)
    assert last_second.time_to_expiry_years == 1 / 31_536_000
    for when in (ist(2026, 1, 29, 15, 30), ist(2026, 1, 29, 15, 45), ist(2026, 2, 2, 9, 15)):
        expired = compute_greeks(event_time=when, **args)
        assert expired.error == ERR_EXPIRED
        assert_clean(expired)
    chain = chain_greeks(price, SPOT, k, [t, 0.0, -1e-3], "c", R)
    assert chain.errors == ["", ERR_EXPIRED, ERR_EXPIRED]


def test_time_to_expiry_is_right_on_a_utc_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The close is 15:30 in Asia/Kolkata whatever the host's zone: same numbers on UTC."""
    expected_epoch = calendar.timegm((2026, 1, 29, 10, 0, 0))
    event = calendar.timegm((2026, 1, 29, 4, 30, 0))  # 10:00 IST
    try:
        for zone in ("UTC", "America/New_York", "Asia/Kolkata"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            expiry_epoch.cache_clear()
            assert time.localtime(event).tm_hour == {"UTC": 4, "America/New_York": 23}.get(
                zone, 10
            )  # the host zone really changed
            assert expiry_epoch(EXPIRY) == expected_epoch
            assert time_to_expiry(EXPIRY, event) == 19_800 / 31_536_000
            result = compute_greeks(
                option_price=120.0, underlying_price=SPOT, strike=22_000.0, expiry=EXPIRY,
                is_call=True, event_time=event, rate=R,
            )  # fmt: skip
            assert result.time_to_expiry_years == 19_800 / 31_536_000
            assert result.to_redis()["event_time"] == "2026-01-29T10:00:00+05:30"
    finally:
        monkeypatch.undo()
        time.tzset()
        expiry_epoch.cache_clear()


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"option_price": 100.0, "underlying_price": None}, ERR_NO_UNDERLYING),
        ({"option_price": 100.0, "underlying_price": 0.0}, ERR_NO_UNDERLYING),
        ({"option_price": 100.0, "underlying_price": math.nan}, ERR_NO_UNDERLYING),
        ({"option_price": None}, ERR_NO_PRICE),
        ({"option_price": 0.0}, ERR_NO_PRICE),
        ({"option_price": -5.0}, ERR_NO_PRICE),
        ({"option_price": math.inf}, ERR_NO_PRICE),
        ({"option_price": 500.0, "strike": 21_000.0}, ERR_BELOW_INTRINSIC),  # ITM call < F - K
        ({"option_price": 30_000.0}, ERR_ABOVE_MAXIMUM),  # a call above the underlying
        ({"option_price": 5e-324, "strike": 30_000.0}, ERR_NO_IV),  # time value underflows
        ({"option_price": 100.0, "strike": 0.0}, ERR_INVALID),
        ({"option_price": 100.0, "rate": math.nan}, ERR_INVALID),
        ({"option_price": 100.0, "event_time": event_at(0.0)}, ERR_EXPIRED),
    ],
)
def test_every_unsolvable_case_gives_a_reason_and_no_nan(
    model: Model, kwargs: dict[str, Any], reason: str
) -> None:
    args: dict[str, Any] = {
        "option_price": 100.0, "underlying_price": SPOT, "strike": 22_000.0, "expiry": EXPIRY,
        "is_call": True, "event_time": event_at(30 / 365), "rate": R, "model": model,
        "underlying_token": 256265,
    }  # fmt: skip
    args.update(kwargs)
    result = compute_greeks(**args)
    assert result.error == reason
    assert_clean(result)
    assert all(getattr(result, name) is None for name in ("iv", *GREEK_NAMES))
    # the chain path gives the same reason
    t = (expiry_epoch(EXPIRY) - args["event_time"]) / SECONDS_PER_YEAR
    price = math.nan if args["option_price"] is None else args["option_price"]
    underlying = math.nan if args["underlying_price"] is None else args["underlying_price"]
    chain = chain_greeks(price, underlying, args["strike"], t, "c", args["rate"], model)
    assert chain.errors == [reason]
    assert_clean(chain.result(0, event_time=args["event_time"]))


def test_price_exactly_at_intrinsic_is_not_a_volatility() -> None:
    t = 30 / 365
    d = float(np.exp(-R * t))
    intrinsic = SPOT - 21_000.0 * d  # a call at S - K e^(-rt): no time value
    result = compute_greeks(
        option_price=intrinsic * (1 - 1e-15), underlying_price=SPOT, strike=21_000.0,
        expiry=EXPIRY, is_call=True, event_time=event_at(t), rate=R,
    )  # fmt: skip
    assert result.error == ERR_BELOW_INTRINSIC


def test_unknown_model_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        compute_greeks(
            option_price=1.0, underlying_price=SPOT, strike=1.0, expiry=EXPIRY, is_call=True,
            event_time=event_at(0.1), rate=R, model="heston",  # type: ignore[arg-type]
        )  # fmt: skip
    with pytest.raises(ValueError, match="unknown model"):
        implied_volatility_vec(1.0, SPOT, 1.0, 0.1, "c", R, "heston")  # type: ignore[arg-type]


# --- the Redis hash --------------------------------------------------------------------------


def test_to_redis_has_exactly_the_schema_fields_with_repr_exact_floats() -> None:
    event_time = ist(2025, 12, 30, 10, 0)
    t = time_to_expiry(EXPIRY, event_time)
    price = ref_price("black_scholes", "p", SPOT, 21_500.0, t, R, 0.16)
    result = compute_greeks(
        option_price=price, underlying_price=SPOT, strike=21_500.0, expiry=EXPIRY,
        is_call=False, event_time=event_time, rate=R, underlying_token=256265,
    )  # fmt: skip
    out = result.to_redis()
    assert tuple(out) == GREEKS_FIELDS
    assert all(isinstance(v, str) for v in out.values())
    assert out["event_time"] == "2025-12-30T10:00:00+05:30"
    assert out["underlying_token"] == "256265"
    assert out["model"] == "black_scholes"
    assert out["error"] == ""
    for name in ("underlying_price", "option_price", "iv", *GREEK_NAMES, "time_to_expiry_years"):
        assert float(out[name]) == getattr(result, name)  # repr round-trips exactly
        assert out[name] == repr(getattr(result, name))
    # the topic form round-trips through JSON
    assert GreeksResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    failed = compute_greeks(
        option_price=price, underlying_price=None, strike=21_500.0, expiry=EXPIRY,
        is_call=False, event_time=event_time, rate=R,
    )  # fmt: skip
    out = failed.to_redis()
    assert out["error"] == ERR_NO_UNDERLYING
    assert out["underlying_token"] == "" and out["underlying_price"] == ""
    assert out["option_price"] == repr(price)
    assert GreeksResult.from_dict(json.loads(json.dumps(failed.to_dict()))) == failed


# --- option price choice ---------------------------------------------------------------------


def test_option_price_prefers_a_sane_mid() -> None:
    assert option_price_from_quote(101.0, 100.0, 104.0, 0.1) == 102.0
    assert option_price_from_quote(101.0, 100.0, 110.0, 0.1) == 105.0  # 10/105 < 0.1
    assert option_price_from_quote(101.0, 100.0, 112.0, 0.1) == 101.0  # too wide: last
    assert option_price_from_quote(101.0, None, 104.0, 0.1) == 101.0
    assert option_price_from_quote(101.0, 0.0, 104.0, 0.1) == 101.0
    assert option_price_from_quote(101.0, 104.0, 100.0, 0.1) == 101.0  # crossed
    assert option_price_from_quote(101.0, 100.0, 100.0, 0.0) == 100.0  # locked, zero spread
    assert option_price_from_quote(0.0, None, None) is None
    assert option_price_from_quote(None, None, None) is None
    assert option_price_from_quote(math.nan, None, None) is None


def full_tick(last: float, bid: float, ask: float, bid_qty: int = 50, ask_qty: int = 75) -> Tick:
    depth = Depth.from_levels([DepthLevel(bid_qty, bid, 3)], [DepthLevel(ask_qty, ask, 2)], 100.0)
    return Tick(12345 << 8 | 2, "full", True, last, exchange_timestamp=1_769_664_600, depth=depth)


def test_option_price_from_tick_reads_the_best_levels() -> None:
    assert option_price_from_tick(full_tick(101.0, 100.0, 102.0)) == 101.0
    assert option_price_from_tick(full_tick(99.0, 100.0, 102.0)) == 101.0
    assert option_price_from_tick(full_tick(99.0, 100.0, 150.0)) == 99.0
    assert option_price_from_tick(full_tick(99.0, 100.0, 102.0, ask_qty=0)) == 99.0  # empty
    ltp = Tick(12345 << 8 | 2, "ltp", True, 88.5)
    assert option_price_from_tick(ltp) == 88.5


def test_greeks_for_tick_uses_the_instrument_master_row() -> None:
    row = Instrument(
        instrument_token=12345 << 8 | 2, exchange_token=12345, tradingsymbol="NIFTY26JAN22000CE",
        name="NIFTY", last_price=0.0, expiry=EXPIRY, strike=22_000.0, tick_size=0.05,
        lot_size=75, instrument_type="CE", segment="NFO-OPT", exchange="NFO",
    )  # fmt: skip
    tick = full_tick(350.0, 351.0, 352.0)
    event_time = event_at(30 / 365)
    result = greeks_for_tick(
        tick, row, underlying_price=SPOT, event_time=event_time, rate=R,
        underlying_token=256265,
    )  # fmt: skip
    expected = compute_greeks(
        option_price=351.5, underlying_price=SPOT, strike=22_000.0, expiry=EXPIRY,
        is_call=True, event_time=event_time, rate=R, underlying_token=256265,
    )  # fmt: skip
    assert result == expected and result.ok
    future = replace(row, instrument_type="FUT", strike=0.0, tradingsymbol="NIFTY26JANFUT")
    bad = greeks_for_tick(tick, future, underlying_price=SPOT, event_time=event_time, rate=R)
    assert bad.error == ERR_INVALID
    assert_clean(bad)


# --- rate limiting ---------------------------------------------------------------------------


def test_should_compute_in_event_time() -> None:
    assert should_compute(None, 100.0)
    assert not should_compute(100.0, 100.5)
    assert should_compute(100.0, 101.0)  # exactly the interval
    assert not should_compute(100.0, 99.0)  # late or redelivered: never overwrite newer
    assert not should_compute(100.0, 100.0)
    assert should_compute(100.0, 100.0, min_interval=0.0)
    assert should_compute(100.0, 105.0, min_interval=5.0)


#: (token, event time) of a few ticks of two contracts.
TICKS = ((1, 10.0), (2, 10.2), (1, 10.5), (1, 11.0), (2, 10.9), (2, 11.2))


def test_rate_limiter_per_contract_and_serialisable() -> None:
    limiter = RateLimiter(min_interval=1.0)
    decisions = [limiter.admit(token, t) for token, t in TICKS]
    assert decisions == [True, True, False, True, False, True]
    snapshot = json.loads(json.dumps(limiter.to_dict()))
    restored = RateLimiter.from_dict(snapshot)
    assert restored == limiter
    assert restored.last == {1: 11.0, 2: 11.2}
    assert not restored.admit(1, 11.9) and restored.admit(1, 12.0)
    # a replay of the same ticks makes the same decisions (no wall clock involved)
    again = RateLimiter(min_interval=1.0)
    assert [again.admit(token, t) for token, t in TICKS] == decisions


# --- the vectorised API ----------------------------------------------------------------------


def test_flags_and_broadcasting() -> None:
    price = ref_price("black_scholes", "c", SPOT, 22_500.0, 0.1, R, 0.2)
    put = ref_price("black_scholes", "p", SPOT, 22_500.0, 0.1, R, 0.2)
    for flags in (["c", "p"], ["CE", "PE"], ["Call", "put"], [True, False], [1, -1]):
        ivs, status = implied_volatility_vec([price, put], SPOT, 22_500.0, 0.1, flags, R)
        assert status.tolist() == [0, 0]
        assert ivs == pytest.approx([0.2, 0.2], abs=1e-12)
    grid_2d = np.full((3, 4), price)
    ivs, status = implied_volatility_vec(grid_2d, SPOT, 22_500.0, 0.1, "c", R)
    assert ivs.shape == status.shape == (3, 4)
    empty, empty_status = implied_volatility_vec([], SPOT, 22_500.0, 0.1, "c", R)
    assert empty.shape == empty_status.shape == (0,)
    with pytest.raises(ValueError, match="flags"):
        implied_volatility_vec([price], SPOT, 22_500.0, 0.1, ["x"], R)
    g = greeks_vec(SPOT, 22_500.0, 0.1, "c", R, 0.2)
    assert set(g) == set(GREEK_NAMES)
    ref = ref_greeks("black_scholes", "c", SPOT, 22_500.0, 0.1, R, 0.2)
    assert [float(g[n]) for n in GREEK_NAMES] == pytest.approx(list(ref), rel=1e-12)


def test_realistic_chain_with_tick_rounded_prices() -> None:
    """A NIFTY-like chain, prices on the 0.05 grid: every contract vollib solves, we solve
    to 1e-8; the rest (rounded to zero or below intrinsic) carry a reason."""
    strikes = np.arange(19_000.0, 25_001.0, 50.0)
    ts = np.array([2, 9, 30, 91]) / 365
    k, t = (a.ravel() for a in np.meshgrid(strikes, ts))
    k, t = np.concatenate([k, k]), np.concatenate([t, t])
    flags = np.array(["c"] * (k.size // 2) + ["p"] * (k.size // 2))
    m = np.log(k / SPOT) / np.sqrt(t)
    vols = 0.12 + 0.08 * m * m - 0.04 * m
    prices = np.round(price_vec(SPOT, k, t, flags, R, vols) / 0.05) * 0.05
    ivs, status = implied_volatility_vec(prices, SPOT, k, t, flags, R)
    for i in range(k.size):
        ref = ref_iv("black_scholes", float(prices[i]), SPOT, float(k[i]), float(t[i]), R,
                     str(flags[i]))  # fmt: skip
        if math.isnan(ref):
            assert status[i] != 0 and REASONS[status[i]] in (ERR_NO_PRICE, ERR_BELOW_INTRINSIC)
        else:
            assert status[i] == 0 and abs(ivs[i] - ref) <= 1e-8
    assert (status == 0).sum() > 0.75 * k.size


def test_module_has_no_clock_or_settings() -> None:
    source = greeks.__loader__.get_source(greeks.__name__)  # type: ignore[union-attr]
    assert source is not None
    for forbidden in ("time.time(", "datetime.now", "config.settings", "os.environ"):
        assert forbidden not in source


@pytest.mark.parametrize("model", MODELS)
def test_vectorised_solver_needs_no_scalar_fallback_on_the_grid(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scalar fallback would hide a broken vectorised solver (it gives the same
    answers, slowly): on the grid every normal price must converge on its own, within
    two Householder steps for nearly all."""
    calls: list[tuple[float, ...]] = []

    def fallback(*args: float) -> float:
        calls.append(args)
        return math.nan

    monkeypatch.setattr(greeks, "_lbr_fallback", fallback)
    evaluations: list[int] = []
    evaluate = greeks._black_vega_complement

    def counting(x: Any, s: Any, b_max: Any) -> Any:
        evaluations.append(x.size)
        return evaluate(x, s, b_max)

    monkeypatch.setattr(greeks, "_black_vega_complement", counting)
    c = chain_inputs(model)
    implied_volatility_vec(c["prices"], SPOT, c["strikes"], c["ts"], c["flags"], R, model)
    # only a time value below the smallest normal double goes to the scalar path
    assert all(call[0] < 1e-290 for call in calls)
    assert len(calls) <= int(((c["prices"] > 0) & (c["prices"] < 1e-290)).sum())
    # two evaluations for the guess, then one per iteration; the third touches few
    assert len(evaluations) <= 5
    if len(evaluations) == 5:
        assert evaluations[4] <= 0.05 * evaluations[0]
