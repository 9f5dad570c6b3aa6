"""Option Greeks, computed by the tick hop's flush for a whole batch of option ticks.

Why in the tick hop's flush and not in an agent of its own on the ticks topic: a second
consumer of every tick would double the per-tick Faust cost (most instruments of a
full universe are options), while the flush already holds the latest tick of every token
that ticked. There the due contracts (at most one computation per contract per
``greeks_min_interval`` of event time) are priced together by the vectorised chain path
(``core.greeks.chain_greeks``, about 50x a vollib loop on 1000 contracts), and their
``greeks:{token}`` hashes go to Redis in the same round trip as the tick mirror.

The underlying's price comes from the replicated table (``topology.market``); the
option's own price is the bid/ask mid when the spread is sane, else the last price.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np

from config.instruments import InstrumentMaster
from core.greeks import (
    chain_greeks,
    model_for,
    option_price_from_tick,
    should_compute,
    time_to_expiry,
)
from core.tick import Tick
from topology import metrics
from topology.app import settings
from topology.market import underlying_price, underlying_tokens

#: option token -> (underlying token, strike, expiry, is_call)
OptionSpec = tuple[int, float, date, bool]


class GreeksStage:
    def __init__(self, master: InstrumentMaster) -> None:
        self.model = model_for(settings.greeks_underlying)
        unders = underlying_tokens(master, future=self.model == "black76")
        self.options: dict[int, OptionSpec] = {}
        for token, under in unders.items():
            inst = master.get(token)
            if inst is not None and inst.expiry is not None and inst.strike:
                spec = (under, float(inst.strike), inst.expiry, inst.option_type == "CE")
                self.options[token] = spec
        #: the underlyings the tick hop must publish to the replicated table
        self.underlyings = {spec[0] for spec in self.options.values()}
        #: rate limiter: option token -> event time of its last computation
        self.last: dict[int, float] = {}

    def compute(
        self, latest: Mapping[int, tuple[Tick, int]], event_times: Mapping[int, int]
    ) -> dict[int, dict[str, str]]:
        """``greeks:{token}`` fields for every due option among the latest ticks, at the
        event time the tick hop gave each (a tick without one, before its partition has
        a clock, waits: time to expiry must come from the data)."""
        due: list[tuple[int, Tick, float]] = []
        options, last, interval = self.options, self.last, settings.greeks_min_interval
        for token, (tick, _received_at_ms) in latest.items():
            if token in options and token in event_times:
                event_time = float(tick.exchange_timestamp or event_times[token])
                if should_compute(last.get(token), event_time, interval):
                    last[token] = event_time
                    due.append((token, tick, event_time))
        if not due:
            return {}
        n = len(due)
        price, under, strike, t, flag = (np.empty(n) for _ in range(5))
        under_tokens: list[int] = []
        # One replicated-table read per underlying, not per option: a chain shares it.
        spots: dict[int, float | None] = {}
        for i, (token, tick, event_time) in enumerate(due):
            under_token, k, expiry, is_call = options[token]
            under_tokens.append(under_token)
            option_price = option_price_from_tick(tick, settings.greeks_max_spread)
            if under_token in spots:
                spot = spots[under_token]
            else:
                spot = spots[under_token] = underlying_price(under_token)
            price[i] = np.nan if option_price is None else option_price
            under[i] = np.nan if spot is None else spot
            strike[i] = k
            t[i] = time_to_expiry(expiry, event_time)
            flag[i] = 1.0 if is_call else -1.0
        chain = chain_greeks(price, under, strike, t, flag, settings.risk_free_rate, self.model)
        out: dict[int, dict[str, str]] = {}
        errors = 0
        for i, (token, _tick, event_time) in enumerate(due):
            result = chain.result(i, event_time=event_time, underlying_token=under_tokens[i])
            fields = result.to_redis()
            errors += bool(fields["error"])
            out[token] = fields
        metrics.GREEKS_COMPUTED.inc(n)
        if errors:
            metrics.GREEKS_ERRORS.inc(errors)
        return out
