"""The one settings object of tickflow.

Everything that differs between a laptop, CI and production (addresses, ports, topics,
partition counts, credentials, tuning) is read here from ``TICKFLOW_*`` environment
variables (or a ``.env`` file), so two stacks can run side by side on one machine and no
other module reads ``os.environ``.  Secrets are ``SecretStr``: their ``repr`` and ``str``
are masked, so logging the settings object never leaks them.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TickMode = Literal["ltp", "quote", "full"]

#: Ports of the embedded stack. Deliberately not the services' standard ports, so a
#: developer's own Kafka or Redis on 9092/6379 is never touched by ``make run``.
EMBEDDED_BROKER_PORT = 29092
EMBEDDED_REDIS_PORT = 26379
SIMULATOR_PORT = 28765


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TICKFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- services -------------------------------------------------------------------
    app_id: str = Field("tickflow", description="Faust application id (consumer group).")
    broker_url: str = Field(
        f"kafka://127.0.0.1:{EMBEDDED_BROKER_PORT}",
        description="Kafka-protocol bootstrap servers, `kafka://host:port[;host:port]`.",
    )
    redis_url: str = Field(
        f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0",
        description="Redis URL; a password inside it is moved to redis_password.",
    )
    redis_password: SecretStr | None = Field(None, description="Redis password (secret).")
    redis_key_prefix: str = Field("", description="Prefix for every Redis key.")
    embedded: bool | None = Field(
        None,
        description="Start Tansu and redis-server locally. Default: only when neither "
        "TICKFLOW_BROKER_URL nor TICKFLOW_REDIS_URL is set.",
    )
    state_dir: Path = Field(Path(".tickflow"), description="Run files, logs, table data.")

    # --- topics ---------------------------------------------------------------------
    topic_partitions: int = Field(8, ge=1, description="Partitions of every token-keyed topic.")
    topic_replication: int = Field(1, ge=1, description="Replication factor of created topics.")
    topic_ticks: str = Field("ticks", description="Raw ticks, key = instrument_token.")
    topic_bars: str = Field("bars", description="Closed 1-minute bars, key = token.")
    topic_volume: str = Field("volume", description="Volume results per bar, key = token.")
    topic_baselines: str = Field(
        "baselines", description="Bootstrapped baselines to load into the tables, key = token."
    )

    # --- analytics (analytics-spec section 1) ---------------------------------------
    watermark_grace: float = Field(
        5.0, ge=0, description="Seconds of event time a bar waits for late ticks."
    )
    volume_window: int = Field(5, ge=1, description="Trailing bars in the volume ratio.")
    volume_ratio_cap: float = Field(50.0, gt=0, description="Published volume ratio cap.")
    baseline_sessions: int = Field(20, ge=1, description="Sessions in a slot baseline.")
    baseline_min_sessions: int = Field(
        3, ge=1, description="Fewer sessions than this: the daily-average fallback."
    )
    value_area_share: float = Field(0.7, gt=0, le=1, description="Volume profile value area.")
    bars_stream_maxlen: int = Field(
        7500, ge=0, description="Approximate cap of each bars:1m stream (0 = none)."
    )

    # --- indicators, Greeks, regime (analytics-spec sections 2 to 4) ------------------
    topic_indicators: str = Field("indicators", description="Indicator results per bar.")
    topic_alerts: str = Field("alerts", description="Pattern alerts, key = token.")
    risk_free_rate: float = Field(0.065, description="Risk-free rate (INR) for the Greeks.")
    greeks_underlying: Literal["spot", "future"] = Field(
        "spot",
        description="Price options on the index spot / equity (Black-Scholes) or on the "
        "matching future (Black-76).",
    )
    greeks_min_interval: float = Field(
        1.0, ge=0, description="Seconds of event time between two computations per contract."
    )
    greeks_max_spread: float = Field(
        0.1,
        ge=0,
        description="Use the bid/ask mid as option price when the spread is at most this "
        "share of the mid; otherwise the last price.",
    )
    vix_token: int = Field(264969, description="Instrument token of India VIX.")
    regime_normal_from: float = Field(15.0, description="VIX at or above: NORMAL (below: LOW).")
    regime_high_from: float = Field(20.0, description="VIX at or above: HIGH.")
    regime_panic_from: float = Field(25.0, description="VIX at or above: PANIC.")

    # --- patterns and alerts (analytics-spec section 5) ------------------------------
    pattern_cooldown: int = Field(
        300,
        ge=0,
        description="Seconds of event time between two alerts of one token, pattern and signal.",
    )
    pattern_volume_thresholds: dict[str, float] = Field(
        default_factory=lambda: {
            "volume_spike": 2.2,
            "volume_breakout": 1.8,
            "volume_price_divergence": 1.5,
            "upside_momentum": 1.3,
            "downside_momentum": 1.3,
            "breakout": 1.8,
            "reversal": 1.6,
            "hidden_accumulation": 1.6,
        },
        description="Base volume-ratio threshold per pattern (JSON; a partial dict overrides "
        "only the patterns it names).",
    )
    pattern_volume_multipliers: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "volume_spike": {"LOW": 0.7, "NORMAL": 1.0, "HIGH": 1.3, "PANIC": 1.8},
            "volume_breakout": {"LOW": 0.8, "NORMAL": 1.0, "HIGH": 1.4, "PANIC": 2.0},
            "volume_price_divergence": {"LOW": 0.7, "NORMAL": 1.0, "HIGH": 1.3, "PANIC": 1.8},
            "upside_momentum": {"LOW": 0.7, "NORMAL": 1.0, "HIGH": 1.3, "PANIC": 1.8},
            "downside_momentum": {"LOW": 0.7, "NORMAL": 1.0, "HIGH": 1.3, "PANIC": 1.8},
            "breakout": {"LOW": 0.8, "NORMAL": 1.0, "HIGH": 1.4, "PANIC": 2.0},
            "reversal": {"LOW": 0.7, "NORMAL": 1.0, "HIGH": 1.3, "PANIC": 1.8},
            "hidden_accumulation": {"LOW": 0.7, "NORMAL": 1.0, "HIGH": 1.3, "PANIC": 1.8},
        },
        description="Regime multiplier of each pattern's volume threshold, pattern -> "
        "regime -> factor (JSON; partial dicts override only what they name).",
    )
    pattern_price_multipliers: dict[str, float] = Field(
        default_factory=lambda: {"LOW": 0.8, "NORMAL": 1.0, "HIGH": 1.4, "PANIC": 1.0},
        description="Regime multiplier m of the price thresholds written with m in the "
        "spec (JSON; a partial dict overrides only the regimes it names).",
    )
    pattern_spike_min_move: float = Field(
        0.1, gt=0, description="volume_spike: minimum abs(pc) in percent (not scaled by m)."
    )
    pattern_volume_breakout_move: float = Field(
        0.3, gt=0, description="volume_breakout: abs(pc) must exceed this x m (percent)."
    )
    pattern_divergence_move: float = Field(
        0.5, gt=0, description="volume_price_divergence: pc beyond -/+ this x m (percent)."
    )
    pattern_divergence_low_ratio: float = Field(
        0.8, gt=0, description="volume_price_divergence: ratio below this = unconfirmed rise."
    )
    pattern_momentum_move: float = Field(
        0.5, gt=0, description="up/downside_momentum: pc beyond -/+ this x m (percent)."
    )
    pattern_momentum_rsi_max: float = Field(
        70.0, ge=0, le=100, description="upside_momentum fires only with RSI below this."
    )
    pattern_momentum_rsi_min: float = Field(
        30.0, ge=0, le=100, description="downside_momentum fires only with RSI above this."
    )
    pattern_breakout_lookback: int = Field(
        20, ge=1, description="breakout: earlier bars whose high/low the close must break."
    )
    pattern_breakout_move: float = Field(
        0.3, gt=0, description="breakout: abs(pc) must exceed this x m (percent)."
    )
    pattern_breakout_rsi_min: float = Field(
        30.0, ge=0, le=100, description="breakout: lowest RSI allowed (inclusive)."
    )
    pattern_breakout_rsi_max: float = Field(
        70.0, ge=0, le=100, description="breakout: highest RSI allowed (inclusive)."
    )
    pattern_reversal_first_leg: float = Field(
        0.4, gt=0, description="reversal: first leg (p0 -> p2) beyond this x m (percent)."
    )
    pattern_reversal_second_leg: float = Field(
        0.2, gt=0, description="reversal: opposite second leg (p2 -> p4) beyond this x m (%)."
    )
    pattern_hidden_max_ratio: float = Field(
        2.0, gt=0, description="hidden_accumulation: volume ratio must stay below this."
    )
    pattern_hidden_rsi_min: float = Field(
        45.0, ge=0, le=100, description="hidden_accumulation: RSI above this (exclusive)."
    )
    pattern_hidden_rsi_max: float = Field(
        65.0, ge=0, le=100, description="hidden_accumulation: RSI below this (exclusive)."
    )
    pattern_hidden_max_move: float = Field(
        0.1, gt=0, description="hidden_accumulation: abs(pc) below this (percent, not x m)."
    )
    pattern_stop_atr_multiple: float = Field(
        1.5, gt=0, description="Stop-loss suggestion: entry -/+ this x ATR(14)."
    )
    pattern_stop_max_pct: float = Field(
        5.0, gt=0, description="Stop-loss distance cap, percent of the entry price."
    )
    alerts_dedup_horizon: int = Field(
        86_400,
        ge=1,
        description="Seconds of event time the alert sink remembers alert ids; "
        "an alert older than the newest by more is dropped as stale.",
    )

    # --- Redis layer -----------------------------------------------------------------
    redis_username: str | None = Field(
        None, description="Redis ACL user (default: the URL's user, else `default`)."
    )
    redis_tls: bool = Field(False, description="Connect with TLS (implied by a rediss:// URL).")
    redis_tls_ca_file: Path | None = Field(
        None, description="CA bundle for the Redis server certificate (default: system store)."
    )
    redis_tls_cert_file: Path | None = Field(
        None, description="TLS client certificate, for servers with tls-auth-clients on."
    )
    redis_tls_key_file: Path | None = Field(None, description="Private key of redis_tls_cert_file.")
    redis_pool_size: int = Field(
        32, ge=1, description="Connections in the process's Redis pool; callers wait for one."
    )
    tick_ttl: int = Field(
        604_800,
        ge=0,
        description="Seconds a tick:{token} hash lives after its last write (0 = forever); a "
        "week outlives weekends and holidays and lets expired contracts' keys go.",
    )
    analytics_ttl: int = Field(
        604_800,
        ge=0,
        description="Seconds a vol:, ind: or greeks: hash lives after its last write "
        "(0 = forever).",
    )
    alerts_stream_maxlen: int = Field(
        10_000, ge=0, description="Approximate cap of the alerts stream (0 = none)."
    )

    # --- worker ---------------------------------------------------------------------
    worker_web_port: int = Field(6066, description="Faust web/metrics port of a worker.")
    worker_datadir: Path | None = Field(
        None,
        description="RocksDB table directory of this worker (default <state_dir>/worker-data); "
        "one per worker process. (faust's own --datadir is read after the app is built, "
        "so it cannot override this.)",
    )
    worker_web_host: str = Field("127.0.0.1", description="Bind address of the worker web.")
    worker_ready_max_lag: int = Field(
        10_000, ge=0, description="Ticks behind per partition above which /health/ready fails."
    )
    broker_session_timeout: float = Field(
        10.0,
        description="Consumer session timeout (s); short because Tansu's first "
        "JoinGroup completes only after half of it.",
    )
    broker_listoffsets_fix: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Correct ListOffsets(latest) end offsets for table recovery: auto = only "
        "where a probe at worker start finds the Tansu 0.6.0 quirk; on/off to force.",
    )
    sink_batch_size: int = Field(2000, ge=1, description="Max ticks per Redis flush.")
    sink_flush_interval: float = Field(
        0.25, gt=0, description="Max seconds a tick waits before its Redis flush."
    )
    instruments_path: Path | None = Field(
        None, description="Kite instrument master CSV (default: the bundled one)."
    )

    # --- Kite / ingestor ------------------------------------------------------------
    kite_api_key: str = Field("tickflow-sim", description="Kite Connect API key.")
    kite_access_token: SecretStr = Field(
        SecretStr("tickflow-sim-token"), description="Kite access token (secret)."
    )
    kite_ws_url: str = Field(
        f"ws://127.0.0.1:{SIMULATOR_PORT}/",
        description="Kite WebSocket endpoint (real: wss://ws.kite.trade/).",
    )
    kite_tokens: list[int] = Field(
        default_factory=list,
        description="Tokens to subscribe (JSON list); empty = every instrument in the master.",
    )
    kite_mode: TickMode = Field("full", description="Subscription mode.")
    ingestor_max_connections: int = Field(3, ge=1, le=3, description="Kite allows 3 per key.")
    ingestor_tokens_per_connection: int = Field(
        3000, ge=1, le=3000, description="Kite allows 3000 instruments per connection."
    )
    ingestor_liveness_timeout: float = Field(
        5.0, gt=0, description="Reconnect after this many seconds without any frame."
    )
    ingestor_backoff_initial: float = Field(0.5, gt=0, description="First reconnect delay (s).")
    ingestor_backoff_max: float = Field(
        30.0, gt=0, description="Reconnect delay cap (s); jittered exponential up to it."
    )
    ingestor_buffer_size: int = Field(
        50_000, ge=1, description="Max ticks queued for the broker before backpressure."
    )
    ingestor_drop_when_full: bool = Field(
        False, description="Drop (and count) instead of blocking the socket when full."
    )
    ingestor_record_path: Path | None = Field(None, description="Record raw frames here.")
    ingestor_metrics_port: int = Field(9108, description="Ingestor Prometheus port (0 = off).")
    producer_linger_ms: int = Field(5, ge=0, description="Producer batching delay (ms).")
    producer_max_batch_bytes: int = Field(
        1_048_576, ge=1024, description="Producer max batch size per partition (bytes)."
    )
    producer_acks: Literal[0, 1, -1] = Field(
        1, description="Producer acks: 1 = leader, -1 = all replicas."
    )

    # --- simulator ------------------------------------------------------------------
    simulator_port: int = Field(SIMULATOR_PORT, description="Kite simulator port.")
    simulator_tokens: int = Field(
        300, ge=1, le=9000, description="Instruments in the simulated universe."
    )
    simulator_speed: float = Field(1.0, gt=0, description="Simulated seconds per second.")
    simulator_seed: int = Field(7, description="Seed of the deterministic market.")
    simulator_start: datetime | None = Field(
        None, description="Simulated start time (ISO 8601); default today 09:15 IST."
    )

    log_level: str = Field("INFO", description="Log level of the scripts.")

    @model_validator(mode="after")
    def _split_redis_password(self) -> Settings:
        """Keep the password out of redis_url so the URL can be logged safely."""
        parts = urlsplit(self.redis_url)
        if parts.password:
            if self.redis_password is None:
                self.redis_password = SecretStr(parts.password)
            netloc = parts.hostname or ""
            if parts.username:
                netloc = f"{parts.username}@{netloc}"
            if parts.port:
                netloc = f"{netloc}:{parts.port}"
            self.redis_url = urlunsplit(parts._replace(netloc=netloc))
        return self

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        return value if "://" in value else f"kafka://{value}"

    @property
    def bootstrap_servers(self) -> str:
        """broker_url as aiokafka wants it: `host:port,host:port`."""
        return ",".join(
            part.split("://", 1)[-1] for part in self.broker_url.replace(";", ",").split(",")
        )

    @property
    def use_embedded(self) -> bool:
        if self.embedded is not None:
            return self.embedded
        return not ({"broker_url", "redis_url"} & self.model_fields_set)

    def redacted(self) -> dict[str, object]:
        """Settings as a dict safe to print: secrets stay masked."""
        return {k: (str(v) if isinstance(v, SecretStr) else v) for k, v in self}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
