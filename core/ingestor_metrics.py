"""Prometheus metrics of the ingestor.

They live in one object built around a ``CollectorRegistry`` (instead of module-level
globals on the default registry) so every test, and every ingestor in one process, gets
its own counters: two ingestors in one process would otherwise collide on metric names,
and a test could not assert exact values.

Everything here is counted on the hot path, so the choices favour cheap updates:
per-frame counters are incremented once per frame with the frame's packet count, and the
publish latency is observed per acknowledged tick only through ``Histogram.observe``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

#: States of one WebSocket connection (a shard of the token list).
CONNECTION_STATES = ["idle", "connecting", "connected", "backoff", "rejected", "stopped"]

#: Why a connection was re-established.
RECONNECT_REASONS = ("liveness", "closed", "error", "handshake")


class IngestorMetrics:
    """The ingestor's metrics, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "tickflow_ingestor_frames",
            "Binary WebSocket frames received (heartbeats too).",
            registry=r,
        )
        self.heartbeats = Counter(
            "tickflow_ingestor_heartbeats", "1-byte heartbeat frames received.", registry=r
        )
        self.bytes = Counter(
            "tickflow_ingestor_bytes", "Bytes of binary frames received.", registry=r
        )
        self.ticks = Counter(
            "tickflow_ingestor_ticks_read", "Valid packets read from the WebSocket.", registry=r
        )
        self.parse_errors = Counter(
            "tickflow_ingestor_parse_errors",
            "Packets or frames that could not be parsed, by kind.",
            ["kind"],
            registry=r,
        )
        self.text_messages = Counter(
            "tickflow_ingestor_text_messages",
            "Text frames received, by message type (order, error, message, invalid).",
            ["type"],
            registry=r,
        )
        self.reconnects = Counter(
            "tickflow_ingestor_reconnects",
            "Connections re-established, by the reason the previous one ended.",
            ["reason"],
            registry=r,
        )
        self.connect_attempts = Counter(
            "tickflow_ingestor_connect_attempts", "WebSocket handshakes attempted.", registry=r
        )
        self.rejections_403 = Counter(
            "tickflow_ingestor_access_token_rejections",
            "Handshakes rejected with HTTP 403 (expired or wrong access token).",
            registry=r,
        )
        self.connection_state = Enum(
            "tickflow_ingestor_connection_state",
            "State of each WebSocket connection.",
            ["connection"],
            states=CONNECTION_STATES,
            registry=r,
        )
        self.published = Counter(
            "tickflow_ingestor_ticks_published",
            "Ticks acknowledged by the broker.",
            registry=r,
        )
        self.dropped = Counter(
            "tickflow_ingestor_ticks_dropped",
            "Ticks dropped because the buffer was full (only with drop_when_full).",
            registry=r,
        )
        self.publish_retries = Counter(
            "tickflow_ingestor_publish_retries",
            "Ticks whose publish failed and was queued again.",
            registry=r,
        )
        self.publish_latency = Histogram(
            "tickflow_ingestor_publish_latency_seconds",
            "From the tick entering the buffer to the broker's acknowledgement.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.buffer_depth = Gauge(
            "tickflow_ingestor_buffer_depth",
            "Ticks held between the socket and the broker's acknowledgement.",
            registry=r,
        )
        self.buffer_capacity = Gauge(
            "tickflow_ingestor_buffer_capacity", "ingestor_buffer_size.", registry=r
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample (``name`` as exported, e.g. ``..._total``); 0 if absent.

        For tests and the status view, which read numbers rather than scrape text.
        """
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found
