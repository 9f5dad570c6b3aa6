"""The signal agent (bar rate): indicators, then the eight patterns, then alerts.

It consumes the ``volume`` topic, whose records carry each closed bar with its volume
results, so the pattern rules see the bar, its volume ratio and the indicators after it
without a join. One table entry per token holds the indicator state and the pattern
state (cooldowns included), written once per bar, after the outputs: a crash in between
re-delivers the bar to a state that has not seen it, which recomputes the same values,
and the alert sink refuses an alert id it already holds. A bar at or before the state's
last one is a re-delivery and changes nothing.

The regime comes from the replicated table (``topology.market``), read in memory, as it
stood at the bar's end (``regime_at``), not when the bar happens to be processed.
Indicator state can be warmed from history: ``scripts.bootstrap_baselines --publish``
sends each token's backfilled state (``core.indicators.backfill``) with its baseline, and
:func:`warm_indicators` installs it unless live bars are already newer.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from config.patterns import pattern_config
from core.bars import Bar
from core.indicators import IndicatorState
from core.patterns import PatternState, evaluate
from storage.alert_sink import AlertSink
from storage.bar_sink import write_hashes
from storage.redis_client import async_redis
from topology import metrics
from topology.app import app, settings, token_topic
from topology.instruments import keys, symbol_of
from topology.market import regime_at
from topology.volume import baselines_topic, volume_topic

log = logging.getLogger(__name__)

indicators_topic = token_topic(settings.topic_indicators)
alerts_topic = token_topic(settings.topic_alerts)
#: token (as str) -> {"i": IndicatorState.to_dict(), "p": PatternState.to_dict()}
signals_table = app.Table("signals", default=None, partitions=settings.topic_partitions)
PATTERNS = pattern_config(settings)


def _ratio(vol: dict[str, str]) -> float | None:
    text = vol.get("volume_ratio", "")
    return float(text) if text else None


@app.agent(volume_topic)
async def signals(stream: faust.StreamT[Any]) -> None:
    client = async_redis(settings)
    sink = AlertSink(
        client,
        keys,
        maxlen=settings.alerts_stream_maxlen,
        dedup_horizon=settings.alerts_dedup_horizon,
    )
    try:
        async for event in stream.events():
            try:
                bar = Bar.from_dict(event.value["bar"])
                vol = event.value["vol"]
            except (KeyError, TypeError, ValueError):
                metrics.BAD_BARS.labels("malformed").inc()
                log.warning("volume record without a bar skipped: %r", event.value)
                continue
            await on_bar(client, sink, bar, vol)
    finally:
        await client.aclose()


async def on_bar(client: Any, sink: AlertSink, bar: Bar, vol: dict[str, str]) -> None:
    token = bar.instrument_token
    key = str(token)
    record = signals_table.get(key) or {}
    indicators = IndicatorState.from_dict(record["i"]) if record.get("i") else IndicatorState()
    patterns = PatternState.from_dict(record["p"]) if record.get("p") else PatternState()
    try:
        result = indicators.update(bar)
    except ValueError as exc:
        metrics.BAD_BARS.labels("indicators").inc()
        log.warning("bar of %s not usable for indicators: %s", token, exc)
        return
    if result is None:
        metrics.BARS_DUPLICATE.inc()
        return
    regime = regime_at(bar.start + 60)
    symbol, exchange = symbol_of(token)
    try:
        evaluated = evaluate(
            patterns,
            bar,
            volume_ratio=_ratio(vol),
            rsi=result.rsi_14,
            atr=result.atr_14,
            regime=regime.regime.value if regime else None,
            vix=regime.vix if regime else None,
            config=PATTERNS,
            symbol=symbol,
            exchange=exchange,
        )
    except ValueError as exc:
        metrics.BAD_BARS.labels("patterns").inc()
        log.warning("bar of %s not usable for patterns: %s", token, exc)
        evaluated = None
    # Outputs first, state last (see the module docstring).
    await write_hashes(client, {keys.indicators(token): result.to_redis()}, settings.analytics_ttl)
    await indicators_topic.send(key=key.encode(), value=result.to_dict())
    metrics.INDICATOR_RESULTS.inc()
    if evaluated is not None:
        if evaluated.alerts:
            written = await sink.write(evaluated.alerts)
            for alert in evaluated.alerts:
                await alerts_topic.send(key=key.encode(), value=alert.to_dict())
                if alert.id in written.written:
                    metrics.ALERTS_EMITTED.labels(alert.pattern).inc()
        if evaluated.suppressed:
            metrics.ALERTS_SUPPRESSED.inc(len(evaluated.suppressed))
    signals_table[key] = {"i": indicators.to_dict(), "p": patterns.to_dict()}


@app.agent(baselines_topic)
async def warm_indicators(stream: faust.StreamT[Any]) -> None:
    """Install backfilled indicator state sent with a bootstrapped baseline, unless the
    token's live state has already seen a later bar (re-publishing is harmless)."""
    async for event in stream.events():
        warm = event.value.get("indicators") if isinstance(event.value, dict) else None
        if not warm:
            continue
        key = str(event.value["token"])
        incoming = IndicatorState.from_dict(warm)
        record = signals_table.get(key) or {}
        current = IndicatorState.from_dict(record["i"]) if record.get("i") else None
        if current is not None and (current.last_start or 0) >= (incoming.last_start or 0):
            continue
        signals_table[key] = {"i": incoming.to_dict(), "p": record.get("p")}
        if (result := incoming.result()) is not None:
            client = async_redis(settings)
            try:
                hashes = {keys.indicators(int(key)): result.to_redis()}
                await write_hashes(client, hashes, settings.analytics_ttl)
            finally:
                await client.aclose()
