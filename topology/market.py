"""Market-wide state that every worker needs: the India VIX regime and underlying prices.

A token's ticks reach one worker only (its partition's owner), but a pattern on any token
needs the regime, and an option's Greeks need its underlying's price, which usually lives
on another partition. Both go through Faust global tables, which every worker replicates
from their changelogs, so a reader looks them up in memory and never asks Redis per
evaluation (legacy bug 10).

The tick hop is the writer: it sees the VIX and the underlyings' ticks on the worker that
owns them and writes at most once per ``greeks_min_interval`` of event time per token (a
table write per tick would put a changelog send on the tick path). The tables use the
in-memory store: they hold a few hundred keys, rebuilt from the changelog at start, which
is compacted on Redpanda (Faust creates changelogs with ``cleanup.policy=compact``).
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from config.instruments import InstrumentMaster
from core.regime import RegimeState, record_state, regime_state, state_at
from topology.app import app, settings

log = logging.getLogger(__name__)

REGIME_KEY = "regime"


def _replicated(name: str) -> faust.types.TableT[str, Any]:
    # partitions=1 with the partitioner and a recovery buffer of 1: the configuration
    # faust-streaming documents for global tables shared by several workers.
    return app.GlobalTable(
        name,
        default=None,
        partitions=1,
        use_partitioner=True,
        recovery_buffer_size=1,
        store="memory://",
    )


#: "regime" -> core.regime.record_state(): the latest state and the regime changes
regime_table = _replicated("regime")
#: str(token) -> {"p": last price, "t": event time}
underlying_prices = _replicated("underlying-prices")


def regime_at(event_time: float) -> RegimeState | None:
    """The regime in effect at ``event_time`` (a bar's end), not at processing time: a
    bar evaluated late (a backlog, a replay, a restarted worker) sees the regime of its
    own minute, so alerts do not depend on how fast the worker ran (exact as long as the
    VIX ticks of that minute were processed first)."""
    return state_at(regime_table.get(REGIME_KEY), event_time)


def underlying_price(token: int) -> float | None:
    value = underlying_prices.get(str(token))
    return float(value["p"]) if value else None


def underlying_tokens(master: InstrumentMaster, future: bool) -> dict[int, int]:
    """option token -> the token it is priced on: the index or equity (spot), or the
    future of the same underlying expiring first on or after the option (Black-76)."""
    out: dict[int, int] = {}
    futures: dict[tuple[str, str], list[tuple[Any, int]]] = {}
    if future:
        for inst in master:
            if inst.is_future and inst.expiry is not None:
                futures.setdefault((inst.exchange, inst.root), []).append(
                    (inst.expiry, inst.instrument_token)
                )
        for listed in futures.values():
            listed.sort()
    for inst in master:
        if not inst.is_option or inst.expiry is None:
            continue
        if future:
            listed = futures.get((inst.exchange, inst.root), [])
            later = [token for expiry, token in listed if expiry >= inst.expiry]
            if later:
                out[inst.instrument_token] = later[0]
        else:
            under = master.underlying_token(inst.instrument_token)
            if under is not None:
                out[inst.instrument_token] = under
    return out


class MarketFeed:
    """The tick hop's writer of the replicated tables (call :meth:`observe` only for
    tokens in :attr:`watched`: a set lookup is all the tick path pays otherwise)."""

    def __init__(self, watched: set[int], vix_token: int, interval: float) -> None:
        self.watched = watched | {vix_token}
        self.vix_token = vix_token
        self.interval = interval
        self.written: dict[int, tuple[float, float]] = {}
        #: a regime to mirror to Redis at the next flush
        self.regime_to_mirror: RegimeState | None = None

    def observe(self, token: int, price: float, event_time: float) -> None:
        last = self.written.get(token)
        if last is not None and (event_time - last[0] < self.interval or last[1] == price):
            return
        self.written[token] = (event_time, price)
        underlying_prices[str(token)] = {"p": price, "t": event_time}
        if token == self.vix_token:
            self._regime(price, event_time)

    def _regime(self, vix: float, event_time: float) -> None:
        try:
            state = regime_state(
                vix,
                event_time,
                normal_from=settings.regime_normal_from,
                high_from=settings.regime_high_from,
                panic_from=settings.regime_panic_from,
            )
        except ValueError as exc:
            log.warning("VIX tick ignored: %s", exc)
            return
        value = record_state(regime_table.get(REGIME_KEY), state)
        if value is not None:
            regime_table[REGIME_KEY] = value
            self.regime_to_mirror = state
