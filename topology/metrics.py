"""Prometheus metrics of a worker, served on its web port at ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKS_CONSUMED = Counter("tickflow_worker_ticks_consumed_total", "Tick records consumed")
TICK_ERRORS = Counter(
    "tickflow_worker_tick_errors_total", "Tick records that could not be decoded", ["kind"]
)
REDIS_WRITES = Counter("tickflow_worker_redis_hashes_written_total", "tick:{token} hashes written")
REDIS_ERRORS = Counter("tickflow_worker_redis_errors_total", "Failed Redis writes (retried)")
FLUSH_SECONDS = Histogram(
    "tickflow_worker_redis_flush_seconds",
    "Duration of one pipelined Redis flush",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TOKENS_SEEN = Gauge("tickflow_worker_tokens_seen", "Distinct tokens mirrored by this worker")
LAST_EVENT_TIME = Gauge(
    "tickflow_worker_last_event_time_seconds", "Latest exchange time seen (epoch seconds)"
)
INSTRUMENTS_LOADED = Gauge("tickflow_worker_instruments_loaded", "Instrument master rows in Redis")
TICKS_DURABLE = Counter(
    "tickflow_worker_ticks_durable_total",
    "Tick records whose effect is durable (their offsets may be committed)",
)
BARS_EMITTED = Counter("tickflow_worker_bars_emitted_total", "1-minute bars sent to the bars topic")
CHECKPOINTS = Counter(
    "tickflow_worker_volume_checkpoints_total", "Volume-state table writes of the tick hop"
)
BARS_DUPLICATE = Counter(
    "tickflow_worker_bars_duplicate_total", "Re-delivered bars (ignored by the analytics)"
)
VOLUME_RESULTS = Counter("tickflow_worker_volume_results_total", "vol:{token} results written")
BASELINES_LOADED = Counter(
    "tickflow_worker_baselines_loaded_total", "Bootstrapped baselines merged"
)
GREEKS_COMPUTED = Counter(
    "tickflow_worker_greeks_computed_total", "Option Greeks computations (errors included)"
)
GREEKS_ERRORS = Counter(
    "tickflow_worker_greeks_errors_total", "Greeks computations that wrote an error reason"
)
INDICATOR_RESULTS = Counter("tickflow_worker_indicator_results_total", "ind:{token} updates")
ALERTS_EMITTED = Counter(
    "tickflow_worker_alerts_total", "Pattern alerts written (duplicates excluded)", ["pattern"]
)
ALERTS_SUPPRESSED = Counter(
    "tickflow_worker_alerts_suppressed_total", "Pattern alerts held back by the cooldown"
)
BAD_BARS = Counter(
    "tickflow_worker_bad_bars_total", "Bars the signal stage could not evaluate", ["reason"]
)
TABLE_RECOVERY_SECONDS = Gauge(
    "tickflow_worker_table_recovery_seconds", "Duration of the last table recovery (rebalance)"
)
CHANGELOG_APPLIED = Counter(
    "tickflow_worker_changelog_records_applied_total",
    "Changelog records applied to a table (recovery and standby replication)",
    ["table"],
)
#: Seconds, from a few ms (local) to minutes (a backlog being replayed).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
LATENCY_FROM_EXCHANGE = Histogram(
    "tickflow_worker_tick_latency_from_exchange_seconds",
    "Exchange timestamp to tick:{token} written (sampled 1 in 8; whole-second stamps)",
    buckets=LATENCY_BUCKETS,
)
LATENCY_FROM_RECEIVE = Histogram(
    "tickflow_worker_tick_latency_from_receive_seconds",
    "Ingestor receive time to tick:{token} written (sampled 1 in 8)",
    buckets=LATENCY_BUCKETS,
)
TICKS_LAG = Gauge(
    "tickflow_worker_ticks_lag", "Tick records behind the partition end", ["partition"]
)
WORKER_READY = Gauge("tickflow_worker_ready", "1 when /health/ready would answer 200")
TICKS_WITHOUT_CLOCK = Counter(
    "tickflow_worker_ticks_without_clock_total",
    "Ticks mirrored but not applied: no exchange time yet on their partition",
)
