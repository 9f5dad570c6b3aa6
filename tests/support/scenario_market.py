"""A labelled market for the pattern tests: history, baselines, scenario, oracle.

Shared by the in-process oracle test (``tests/core/test_market_scenarios.py``) and the
end-to-end test (``tests/e2e/test_alerts_e2e.py``), so both judge the same episodes:

* :func:`make_history` simulates the scenario tokens' past sessions with the project's
  own generator and bootstraps them the way ``scripts.bootstrap_baselines`` does, giving
  the baselines (and warm indicator state) the worker gets, the expected volume per slot
  the simulator sizes episodes with, and each token's last close (the live day starts
  there, so the indicator state warmed on the history sees no artificial gap);
* :func:`scenario_file` is one episode of every kind, on its own token, all aimed at the
  same minute, plus a scripted and a natural quiet stretch;
* :func:`oracle_alerts` folds ticks through the worker's core stages in-process (volume
  engine, volume analytics, indicators, patterns), an independent replica of the worker
  without broker or Faust.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from config.instruments import InstrumentMaster
from core.baselines import DEFAULT_POLICY, TokenBaseline, expected_profile, expected_window, source
from core.indicators import IndicatorState
from core.market_simulator import MarketSimulator
from core.patterns import PatternConfig, PatternState, evaluate
from core.scenarios import Scenario, parse_scenario
from core.tick import Tick
from core.timeutil import IST
from core.volume_analytics import VolumeAnalyticsState, update
from core.volume_engine import TokenVolumeState, advance_watermark, apply_tick
from scripts.bootstrap_baselines import bootstrap
from scripts.generate_history import generate, weekdays_ending

LIVE_DAY = date(2026, 11, 24)  # a Tuesday
START = datetime.combine(LIVE_DAY, time(9, 15), tzinfo=IST)
TARGET = "09:38"
SEED = 11
SESSIONS = 5

#: (token, kind, signal); NSE equities priced well above 5000 ticks.
EPISODES: tuple[tuple[int, str, str | None], ...] = (
    (738561, "volume_spike", "BUY"),  # RELIANCE
    (341249, "volume_breakout", "SELL"),  # HDFCBANK
    (1270529, "breakout", "BUY"),  # ICICIBANK
    (408065, "breakout", "SELL"),  # INFY
    (2953217, "reversal", "SELL"),  # TCS
    (779521, "reversal", "BUY"),  # SBIN
    (2714625, "volume_price_divergence", "BUY"),  # BHARTIARTL
    (2939649, "volume_price_divergence", "SELL"),  # LT
    (492033, "hidden_accumulation", "BUY"),  # KOTAKBANK
    (1510401, "upside_momentum", "BUY"),  # AXISBANK
    (356865, "downside_momentum", "SELL"),  # HINDUNILVR
)
QUIET_SCRIPTED = 857857  # SUNPHARMA
QUIET_NATURAL = 519937  # M&M
TOKENS: tuple[int, ...] = (*(t for t, _, _ in EPISODES), QUIET_SCRIPTED, QUIET_NATURAL)
#: Market minutes the run covers: the windows end at 09:45; two more close the last bars.
MINUTES = 32


def scenario_file() -> dict[str, Any]:
    episodes: list[dict[str, Any]] = [
        {"token": token, "kind": kind, "signal": signal, "at": TARGET}
        for token, kind, signal in EPISODES
    ]
    episodes.append({"token": QUIET_SCRIPTED, "kind": "quiet", "at": "09:16", "minutes": 29})
    episodes.append(
        {"token": QUIET_NATURAL, "kind": "quiet", "at": "09:16", "minutes": 29, "shape": "natural"}
    )
    return {"date": LIVE_DAY.isoformat(), "regime": "NORMAL", "episodes": episodes}


@dataclass(frozen=True)
class History:
    directory: Path
    baselines: dict[int, TokenBaseline]
    indicators: dict[int, dict[str, Any]]

    @property
    def profiles(self) -> dict[int, tuple[float, ...]]:
        """Expected volume per slot: exactly what the worker's baseline divides by."""
        out: dict[int, tuple[float, ...]] = {}
        for token, baseline in self.baselines.items():
            profile = expected_profile(baseline, policy=DEFAULT_POLICY)
            assert profile is not None
            out[token] = profile
        return out

    @property
    def last_closes(self) -> dict[int, float]:
        return {t: float(state["prev_close"]) for t, state in self.indicators.items()}


def make_history(directory: Path, tokens: Sequence[int] = TOKENS) -> History:
    days = weekdays_ending(LIVE_DAY - timedelta(days=1), SESSIONS)
    generate(directory, list(tokens), days, seed=SEED, jobs=1)
    report = bootstrap([directory])
    assert set(report.baselines) == set(tokens), report.files_skipped
    for baseline in report.baselines.values():
        assert source(baseline).startswith("history:"), source(baseline)
    return History(directory, report.baselines, report.indicators)


def make_market(history: History, master: InstrumentMaster) -> MarketSimulator:
    instruments = [inst for t in TOKENS if (inst := master.get(t)) is not None]
    scenario = load(master)
    return MarketSimulator(
        instruments,
        SEED,
        START,
        master=master,
        scenario=scenario,
        baselines=history.profiles,
        reference_prices=history.last_closes,
    )


def load(master: InstrumentMaster, config: PatternConfig | None = None) -> Scenario:
    def resolve(exchange: str, symbol: str) -> int | None:
        inst = master.by_symbol(exchange, symbol)
        return inst.instrument_token if inst else None

    return parse_scenario(scenario_file(), resolve_symbol=resolve, config=config)


def session_ticks(market: MarketSimulator) -> list[Tick]:
    """What a subscriber gets: each token's snapshot at the start, then every tick."""
    snapshots = [tick for t in market.tokens if (tick := market.snapshot(t)) is not None]
    return snapshots + market.advance(START + timedelta(minutes=MINUTES))


def oracle_alerts(
    ticks: Iterable[Tick],
    baselines: Mapping[int, TokenBaseline],
    indicators: Mapping[int, dict[str, Any]],
    *,
    grace: float = 5.0,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Alert id -> alert fields, computed by the worker's core stages in one process,
    and the number of bars closed (what the worker's signal stage will have evaluated).

    Watermarks advance per token from its own ticks here (the worker's run per partition:
    with ticks in event-time order both close every bar the same way, apart from a
    token's last bar, which a later tick of another token may close there)."""
    config = PatternConfig()
    engines: dict[int, TokenVolumeState] = {}
    analytics: dict[int, VolumeAnalyticsState] = {}
    warm = {t: IndicatorState.from_dict(s) for t, s in indicators.items()}
    states: dict[int, tuple[IndicatorState, PatternState]] = {}
    alerts: dict[str, dict[str, Any]] = {}
    closed = 0
    for offset, tick in enumerate(ticks):
        token = tick.instrument_token
        engine = engines.setdefault(token, TokenVolumeState(token))
        event_time = tick.exchange_timestamp or 0
        bars = apply_tick(
            engine, token & 0xFF, offset, event_time, tick.last_price, tick.volume_traded
        )
        bars += advance_watermark(engine, token & 0xFF, event_time - grace)
        closed += len(bars)
        for bar in bars:
            baseline = baselines[token]
            result = update(
                analytics.setdefault(token, VolumeAnalyticsState()),
                bar,
                tick_size=0.05,
                baseline=partial(window_baseline, baseline),
                baseline_source=source(baseline),
            )
            assert result is not None
            ind, pat = states.setdefault(
                token, (warm.get(token) or IndicatorState(), PatternState())
            )
            res = ind.update(bar)
            assert res is not None
            evaluated = evaluate(
                pat,
                bar,
                volume_ratio=result.volume_ratio,
                rsi=res.rsi_14,
                atr=res.atr_14,
                regime=None,
                vix=None,
                config=config,
            )
            if evaluated is not None:
                for alert in evaluated.alerts:
                    alerts[alert.id] = alert.to_dict()
    return alerts, closed


def window_baseline(baseline: TokenBaseline, slots: Sequence[int]) -> float | None:
    return expected_window(baseline, slots)
