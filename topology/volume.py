"""The volume agent (bar rate): volume ratio against time-aware baselines, session VWAP
and volume profile per token, to the ``volume`` topic and to Redis.

One table entry per token holds everything this agent knows about it (analytics state,
baseline, the session being accumulated for the baseline), written once per bar: bar
rate is one record per token per minute, so a changelog write per record is affordable
here. Every step is idempotent: the analytics state ignores a bar at or before its last
one, the session accumulator keys bars by slot, Redis stream ids are bar starts and the
``vol`` hash holds absolute values; so bars re-emitted after a tick-hop restart change
nothing.

Topic sends are buffered, so "outputs before state" does not hold for the ``volume``
topic: the producer may deliver the table's changelog record and lose the topic record
in a ``kill -9``, and the restarted worker would then see the bar as a re-delivery and
never send it downstream. So the state remembers the results of its last few bars and
re-sends them when such a bar comes again (the signal agent ignores what it has seen).
A token has at most one or two bars in flight (one bar a minute, a few seconds between
producer flushes), so a short memory is enough.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from core.bars import Bar
from core.baselines import (
    BaselinePolicy,
    SessionAccumulator,
    TokenBaseline,
    add_session,
    expected_window,
    source,
)
from core.sessions import slot_count, slot_of
from core.volume_analytics import VolumeAnalyticsState, update
from storage.bar_sink import write_bars, write_hashes
from storage.redis_client import async_redis
from topology import metrics
from topology.app import app, settings, token_topic
from topology.instruments import keys, tick_size_of
from topology.tick_hop import bars_topic

log = logging.getLogger(__name__)

volume_topic = token_topic(settings.topic_volume)
baselines_topic = token_topic(settings.topic_baselines)
#: token (as str) -> {"a": analytics state, "b": baseline, "acc": session accumulator,
#: "r": [[bar start, vol fields], ...] of the last bars}
volume_table = app.Table("volume-analytics", default=None, partitions=settings.topic_partitions)

#: Bars whose results a token remembers for re-sending (see the module docstring).
RESENDABLE = 4

POLICY = BaselinePolicy(
    window=settings.baseline_sessions, min_sessions=settings.baseline_min_sessions
)


class TokenVolume:
    """One token's record of the volume table, decoded."""

    def __init__(self, token: int, record: dict[str, Any] | None) -> None:
        record = record or {}
        self.analytics = (
            VolumeAnalyticsState.from_dict(record["a"]) if "a" in record else VolumeAnalyticsState()
        )
        self.baseline = (
            TokenBaseline.from_dict(record["b"])
            if "b" in record
            else TokenBaseline.for_token(token)
        )
        self.acc = SessionAccumulator.from_dict(record["acc"]) if record.get("acc") else None
        self.recent: list[list[Any]] = list(record.get("r") or [])

    def to_record(self) -> dict[str, Any]:
        return {
            "a": self.analytics.to_dict(),
            "b": self.baseline.to_dict(),
            "acc": self.acc.to_dict() if self.acc else None,
            "r": self.recent,
        }

    def remember(self, bar: Bar, fields: dict[str, str]) -> None:
        self.recent = [*self.recent[-(RESENDABLE - 1) :], [bar.start, fields]]

    def recalled(self, bar: Bar) -> dict[str, str] | None:
        """The results of a bar already applied, if it is one of the last few."""
        return next((fields for start, fields in self.recent if start == bar.start), None)

    def close_session(self) -> None:
        """Fold the accumulated session into the baseline (at its last slot or when the
        next session's first bar shows it is over)."""
        if self.acc is not None:
            finished = self.acc.finish()
            if finished is not None:
                self.baseline = add_session(self.baseline, *finished, policy=POLICY)
            self.acc = None

    def on_bar(self, bar: Bar) -> dict[str, str] | None:
        """The ``vol:{token}`` fields for a bar, or None for a re-delivered one."""
        if self.acc is not None and self.acc.session != bar.session:
            self.close_session()
        baseline = self.baseline
        result = update(
            self.analytics,
            bar,
            tick_size=tick_size_of(bar.instrument_token),
            baseline=lambda slots: expected_window(baseline, slots, policy=POLICY),
            baseline_source=source(baseline, policy=POLICY),
            cap=settings.volume_ratio_cap,
            window=settings.volume_window,
            value_area_share=settings.value_area_share,
        )
        if result is None:
            return None
        if self.acc is None:
            self.acc = SessionAccumulator(bar.instrument_token, bar.session)
        self.acc.add(bar)
        segment = bar.instrument_token & 0xFF
        if slot_of(segment, bar.start) == slot_count(segment) - 1:
            self.close_session()
        return result.to_redis()


@app.agent(bars_topic)
async def volume(stream: faust.StreamT[Any]) -> None:
    client = async_redis(settings)
    maxlen = settings.bars_stream_maxlen or None
    try:
        async for event in stream.events():
            bar = Bar.from_dict(event.value)
            key = str(bar.instrument_token)
            state = TokenVolume(bar.instrument_token, volume_table.get(key))
            fields = state.on_bar(bar)
            if fields is None:
                metrics.BARS_DUPLICATE.inc()
                # Still (re)write the bar: an earlier attempt may have died before Redis,
                # or before the producer delivered its volume record.
                await write_bars(client, keys, [bar], maxlen)
                if (recalled := state.recalled(bar)) is not None:
                    value = {"bar": bar.to_dict(), "vol": recalled}
                    await volume_topic.send(key=key.encode(), value=value)
                continue
            # Outputs first, state last: a crash in between re-delivers the bar to a state
            # that has not seen it, which rewrites the same values. (State first, and a
            # crash would leave a state that skips the bar whose outputs never landed.)
            await write_bars(client, keys, [bar], maxlen)
            await write_hashes(
                client, {keys.vol(bar.instrument_token): fields}, settings.analytics_ttl
            )
            await volume_topic.send(key=key.encode(), value={"bar": bar.to_dict(), "vol": fields})
            state.remember(bar, fields)
            volume_table[key] = state.to_record()
            metrics.VOLUME_RESULTS.inc()
    finally:
        await client.aclose()


@app.agent(baselines_topic)
async def load_baseline(stream: faust.StreamT[Any]) -> None:
    """Merge bootstrapped history (``scripts.bootstrap_baselines --publish``) into the
    tokens' baselines; re-publishing the same sessions replaces them (idempotent)."""
    async for event in stream.events():
        incoming = TokenBaseline.from_dict(event.value["baseline"])
        token = int(event.value["token"])
        key = str(token)
        state = TokenVolume(token, volume_table.get(key))
        merged = state.baseline
        for ordinal, volumes in incoming.sessions:
            merged = add_session(merged, ordinal, volumes, policy=POLICY)
        if incoming.daily_volume is not None and merged.daily_volume is None:
            merged = TokenBaseline(merged.segment, merged.sessions, incoming.daily_volume)
        state.baseline = merged
        volume_table[key] = state.to_record()
        metrics.BASELINES_LOADED.inc()
        log.debug("baseline of %s: %d sessions", token, len(merged.sessions))
