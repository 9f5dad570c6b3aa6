"""Option-chain Greeks: ``core.greeks.chain_greeks`` against a per-option vollib loop.

Run ``python -m bench.bench_greeks``. Both sides get the same realistic chain: 1000 NIFTY
contracts (5 expiries from 2 to 58 days x 100 strikes, calls and puts) priced from a
volatility smile (skew and curvature in log-moneyness over sqrt(t)) and rounded to the
0.05 tick, so the deep in-the-money and far out-of-the-money rows carry the same oddities
a live chain does (a price on or below intrinsic, a minimum-tick price). The baseline is
what the legacy loop does per option: vollib's Let's Be Rational IV, then its five
analytical Greeks. Both are timed in the same process, best of several repeats with the
garbage collector paused, so the ratio is meaningful on a shared machine.

A fast chain that is wrong is worthless, so the numbers are checked first: wherever
vollib finds a volatility ours must agree to 1e-8 and every Greek to 1e-6 (relative above
1); wherever it does not, ours must give a reason. The command exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial

import numpy as np
from vollib.black import black as black76_price
from vollib.black.greeks import analytical as black76_greeks
from vollib.black.implied_volatility import implied_volatility as black76_iv
from vollib.black_scholes import black_scholes as bs_price
from vollib.black_scholes.greeks import analytical as bs_greeks
from vollib.black_scholes.implied_volatility import implied_volatility as bs_iv

from core.greeks import (
    REASONS,
    SECONDS_PER_YEAR,
    ChainGreeks,
    Model,
    chain_greeks,
    compute_greeks,
    expiry_epoch,
)

SPOT = 22_000.0
RATE = 0.065
TICK = 0.05
GREEKS = ("delta", "gamma", "theta", "vega", "rho")
#: Days to expiry of the chain's five series (weekly to the second monthly).
EXPIRY_DAYS = (2, 9, 16, 30, 58)
#: Any expiry date will do for the per-tick path: event times are set to give each t.
EXPIRY = date(2026, 1, 29)


@dataclass(frozen=True)
class Chain:
    price: np.ndarray
    strike: np.ndarray
    t: np.ndarray
    flag: np.ndarray  # 'c' / 'p', as vollib takes them
    underlying: float
    model: Model

    def __len__(self) -> int:
        return int(self.price.size)


def build_chain(model: Model, strikes_per_expiry: int = 100) -> Chain:
    """1000 contracts (by default) with a smile, priced by vollib, on the tick grid."""
    strikes = SPOT + TICK * 1000 * (np.arange(strikes_per_expiry) - strikes_per_expiry // 2)
    k, days = (a.ravel() for a in np.meshgrid(strikes, np.array(EXPIRY_DAYS, dtype=float)))
    t = days / 365.0
    k, t = np.concatenate([k, k]), np.concatenate([t, t])
    flag = np.array(["c"] * (k.size // 2) + ["p"] * (k.size // 2))
    forward = SPOT * np.exp(RATE * t) if model == "black_scholes" else SPOT
    m = np.log(k / forward) / np.sqrt(t)
    atm = 0.11 + 0.04 * np.exp(-t * 365 / 10)  # short expiries trade richer
    vol = atm * (1.0 - 0.9 * m + 3.0 * m * m)
    pricer = bs_price if model == "black_scholes" else black76_price
    raw = np.array(
        [pricer(f, SPOT, kk, tt, RATE, v) for f, kk, tt, v in zip(flag, k, t, vol, strict=True)]
    )
    price = np.maximum(np.round(raw / TICK) * TICK, TICK)
    return Chain(price, k, t, flag, SPOT, model)


def vollib_loop(chain: Chain) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: per option, vollib's IV then its five analytical Greeks."""
    n = len(chain)
    iv = np.full(n, np.nan)
    out = np.full((5, n), np.nan)
    if chain.model == "black_scholes":
        solve: Callable[..., float] = bs_iv
        module = bs_greeks
    else:
        module = black76_greeks
    delta, gamma, theta, vega, rho = (getattr(module, name) for name in GREEKS)
    u, r = chain.underlying, RATE
    prices, strikes, ts, flags = (
        a.tolist() for a in (chain.price, chain.strike, chain.t, chain.flag)
    )
    for i in range(n):
        p, k, t, f = prices[i], strikes[i], ts[i], flags[i]
        try:
            sigma = (
                solve(p, u, k, t, r, f)
                if chain.model == "black_scholes"
                else black76_iv(p, u, k, r, t, f)
            )
        except Exception:
            continue
        if not sigma > 0:
            continue
        iv[i] = sigma
        out[0, i] = delta(f, u, k, t, r, sigma)
        out[1, i] = gamma(f, u, k, t, r, sigma)
        out[2, i] = theta(f, u, k, t, r, sigma)
        out[3, i] = vega(f, u, k, t, r, sigma)
        out[4, i] = rho(f, u, k, t, r, sigma)
    return iv, out


def ours(chain: Chain) -> ChainGreeks:
    return chain_greeks(chain.price, chain.underlying, chain.strike, chain.t, chain.flag, RATE,
                        chain.model)  # fmt: skip


def per_tick(chain: Chain) -> None:
    """The per-tick path over the same chain: what the agent pays option by option."""
    close = expiry_epoch(EXPIRY)
    for p, k, t, f in zip(
        chain.price.tolist(),
        chain.strike.tolist(),
        chain.t.tolist(),
        chain.flag.tolist(),
        strict=True,
    ):
        compute_greeks(
            option_price=p, underlying_price=chain.underlying, strike=k, expiry=EXPIRY,
            is_call=f == "c", event_time=close - t * SECONDS_PER_YEAR, rate=RATE, model=chain.model,
        )  # fmt: skip


def verify(chain: Chain) -> list[str]:
    """Disagreements between ours and vollib (empty when all agree)."""
    ref_iv, ref = vollib_loop(chain)
    got = ours(chain)
    problems: list[str] = []
    for i in range(len(chain)):
        where = (
            f"{chain.flag[i]} K={chain.strike[i]:.0f} t={chain.t[i] * 365:.0f}d "
            f"p={chain.price[i]:.2f}"
        )
        if math.isnan(ref_iv[i]):
            if got.status[i] == 0:
                problems.append(f"{where}: vollib finds no volatility, ours {got.iv[i]!r}")
            continue
        if got.status[i] != 0:
            problems.append(f"{where}: vollib {ref_iv[i]!r}, ours '{REASONS[got.status[i]]}'")
            continue
        if abs(got.iv[i] - ref_iv[i]) > 1e-8:
            problems.append(f"{where}: iv {got.iv[i]!r} vs vollib {ref_iv[i]!r}")
        for row, name in enumerate(GREEKS):
            a, b = float(getattr(got, name)[i]), float(ref[row, i])
            if not abs(a - b) <= 1e-6 * max(1.0, abs(b)):
                problems.append(f"{where}: {name} {a!r} vs vollib {b!r}")
    return problems


def agreement(chain: Chain) -> tuple[int, float, float]:
    """(contracts both solve, max |iv difference|, max Greek difference, relative above 1)."""
    ref_iv, ref = vollib_loop(chain)
    got = ours(chain)
    both = np.isfinite(ref_iv) & (got.status == 0)
    iv_diff = float(np.max(np.abs(got.iv[both] - ref_iv[both]))) if both.any() else 0.0
    greek_diff = 0.0
    for row, name in enumerate(GREEKS):
        a, b = getattr(got, name)[both], ref[row, both]
        greek_diff = max(greek_diff, float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))))
    return int(both.sum()), iv_diff, greek_diff


def best_time(run: Callable[[], object], repeats: int, number: int = 1) -> float:
    """Best mean wall time of one run over ``repeats`` samples of ``number`` back-to-back
    runs, GC paused during each sample (as timeit does). A sub-millisecond run is timed
    in batches: right after ``gc.collect()`` the caches are cold, and a single run would
    measure that rather than the chain."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(number):
                run()
            best = min(best, (time.perf_counter() - start) / number)
        finally:
            gc.enable()
    return best


@dataclass
class Row:
    name: str
    contracts: int
    ours_s: float
    vollib_s: float

    @property
    def ratio(self) -> float:
        return self.vollib_s / self.ours_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="best of N runs (7)")
    parser.add_argument("--strikes", type=int, default=100, help="strikes per expiry (100)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    models: tuple[Model, ...] = ("black_scholes", "black76")
    chains = {model: build_chain(model, args.strikes) for model in models}
    failed = False
    for model, chain in chains.items():
        problems = verify(chain)
        solved, iv_diff, greek_diff = agreement(chain)
        errors = np.bincount(ours(chain).status, minlength=len(REASONS))
        reasons = ", ".join(f"{REASONS[c]} {n}" for c, n in enumerate(errors) if c and n)
        print(
            f"{model}: {len(chain)} contracts, {solved} solved by both, max |iv diff| "
            f"{iv_diff:.1e}, max Greek diff {greek_diff:.1e}; no iv ({reasons or 'none'}): "
            f"{'all values agree' if not problems else f'{len(problems)} DIFFER'}"
        )
        for line in problems[:5]:
            print(f"  {line}", file=sys.stderr)
        failed |= bool(problems)
    if failed:
        return 1

    rows: list[Row] = []
    for model, chain in chains.items():
        ours_s = best_time(partial(ours, chain), args.repeats, number=20)
        vollib_s = best_time(partial(vollib_loop, chain), args.repeats)
        rows.append(Row(f"chain IV + 5 Greeks, {model}", len(chain), ours_s, vollib_s))
    bs = chains["black_scholes"]
    rows.append(
        Row("per-tick path (compute_greeks), black_scholes", len(bs),
            best_time(partial(per_tick, bs), args.repeats), rows[0].vollib_s)
    )  # fmt: skip

    print()
    print("| path | contracts | ours ms/chain | vollib ms/chain | ours us/option "
          "| vollib us/option | speed-up |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.contracts} | {row.ours_s * 1e3:.2f} | {row.vollib_s * 1e3:.1f} "
            f"| {row.ours_s / row.contracts * 1e6:.2f} | {row.vollib_s / row.contracts * 1e6:.1f} "
            f"| {row.ratio:.1f}x |"
        )
    main_row = rows[0]
    print()
    print(
        f"chain ({main_row.contracts} contracts, black_scholes): ours "
        f"{main_row.ours_s * 1e3:.2f} ms, vollib loop {main_row.vollib_s * 1e3:.1f} ms, "
        f"speed-up {main_row.ratio:.1f}x (python {sys.version.split()[0]}, numpy "
        f"{np.__version__}, {time.perf_counter() - started:.1f} s total)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
