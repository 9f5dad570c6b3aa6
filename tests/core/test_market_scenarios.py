"""Scenario injection in the market simulator: the scripted path is the planned one, the
rest of the market is untouched, and the worker's own core stages, folded in-process,
raise exactly the labelled alerts (precision and recall 1.0)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from config.instruments import InstrumentMaster
from core.market_simulator import MarketSimulator
from core.scenarios import Episode, Scenario, ScenarioError, score
from core.tick import Tick
from core.timeutil import IST
from core.volume_engine import TokenVolumeState, advance_watermark, apply_tick
from tests.support.scenario_market import (
    History,
    make_history,
    make_market,
    oracle_alerts,
    session_ticks,
)

START = datetime(2026, 11, 24, 10, 0, tzinfo=IST)
RELIANCE, INFY, TCS = 738561, 408065, 2953217
AT = int((START + timedelta(minutes=30)).timestamp())


@pytest.fixture(scope="module")
def master() -> InstrumentMaster:
    return InstrumentMaster.load()


def market(master: InstrumentMaster, scenario: Scenario | None) -> MarketSimulator:
    instruments = [inst for t in (RELIANCE, INFY, TCS) if (inst := master.get(t)) is not None]
    return MarketSimulator(instruments, 3, START, master=master, scenario=scenario)


def bars_of(ticks: list[Tick], token: int) -> dict[int, tuple[float, int, int]]:
    """start -> (close, volume, ticks) of the token's bars, as the worker's engine makes."""
    state = TokenVolumeState(token)
    out = {}
    for offset, tick in enumerate(t for t in ticks if t.instrument_token == token):
        stamp = tick.exchange_timestamp or 0
        closed = apply_tick(state, 1, offset, stamp, tick.last_price, tick.volume_traded)
        for bar in closed + advance_watermark(state, 1, stamp - 5):
            out[bar.start] = (bar.close, bar.volume, bar.ticks)
    return out


def test_the_scripted_window_prints_the_plan_and_the_walk_resumes_from_it(
    master: InstrumentMaster,
) -> None:
    scenario = Scenario((Episode(RELIANCE, "reversal", AT, "SELL", name="rev"),))
    sim = market(master, scenario)
    (plan,) = sim.plans
    ticks = sim.advance(START + timedelta(minutes=45))
    bars = bars_of(ticks, RELIANCE)
    first = plan.minutes[0].start
    mine = [t for t in ticks if t.instrument_token == RELIANCE]
    base = [t for t in mine if (t.exchange_timestamp or 0) < first]
    base_price = base[-1].last_price
    for minute in plan.minutes:
        close, volume, count = bars[minute.start]
        assert volume == minute.volume, minute
        assert count == 6  # only the script's prints: the natural process is silent
        assert close == pytest.approx(base_price * minute.close, abs=0.05)
    after = [t for t in mine if (t.exchange_timestamp or 0) >= plan.window_end]
    last_close = bars[plan.minutes[-1].start][0]
    assert after and abs(after[0].last_price / last_close - 1) < 0.002  # no jump back
    volumes = [t.volume_traded or 0 for t in ticks if t.instrument_token == RELIANCE]
    assert volumes == sorted(volumes)  # the day's cumulative volume only rises


def test_other_tokens_and_runs_are_unchanged(master: InstrumentMaster) -> None:
    scenario = Scenario((Episode(RELIANCE, "volume_spike", AT, "BUY", name="spike"),))
    plain = market(master, None).advance(START + timedelta(minutes=40))
    scripted_sim = market(master, scenario)
    scripted = scripted_sim.advance(START + timedelta(minutes=40))
    assert [t for t in plain if t.instrument_token != RELIANCE] == [
        t for t in scripted if t.instrument_token != RELIANCE
    ]
    assert [t for t in plain if t.instrument_token == RELIANCE] != [
        t for t in scripted if t.instrument_token == RELIANCE
    ]
    # Deterministic, and independent of how time is chopped.
    again = market(master, scenario)
    chopped: list[Tick] = []
    for minute in range(1, 41):
        chopped += again.advance(START + timedelta(minutes=minute))
    assert chopped == scripted
    assert again.ground_truth() == scripted_sim.ground_truth()


def test_a_scenario_must_fit_the_market(master: InstrumentMaster) -> None:
    nifty = 256265
    with pytest.raises(ScenarioError, match="not a subscribed equity"):
        market(master, Scenario((Episode(nifty, "reversal", AT, "BUY"),)))
    early = int((START + timedelta(minutes=10)).timestamp())
    with pytest.raises(ScenarioError, match="not after the simulation's start"):
        market(master, Scenario((Episode(RELIANCE, "reversal", early, "BUY", name="early"),)))
    overlapping = (
        Episode(TCS, "reversal", AT, "BUY", name="a"),
        Episode(TCS, "reversal", AT + 600, "SELL", name="b"),
    )
    with pytest.raises(ScenarioError, match="overlap"):
        market(master, Scenario(overlapping))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return make_history(Path(tmp_path_factory.mktemp("history")))


def test_the_workers_core_stages_raise_exactly_the_labelled_alerts(
    history: History, master: InstrumentMaster
) -> None:
    """The oracle: ticks -> volume engine -> volume ratio on the bootstrapped baselines
    -> indicators warmed on the history -> the eight rules, all in-process."""
    sim = make_market(history, master)
    labels = sim.ground_truth()
    alerts, bars = oracle_alerts(session_ticks(sim), history.baselines, history.indicators)
    scored = score(labels, alerts)
    print(f"\nin-process oracle: precision {scored['precision']} recall {scored['recall']}")
    assert scored["precision"] == 1.0 and scored["recall"] == 1.0, scored
    assert scored["unlabelled"] == []
    assert bars >= 13 * 29
    kinds = {e["kind"] for e in labels["episodes"]}
    assert {a["pattern"] for a in alerts.values()} == kinds - {"quiet"}
