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

    # --- worker ---------------------------------------------------------------------
    worker_web_port: int = Field(6066, description="Faust web/metrics port of a worker.")
    worker_datadir: Path | None = Field(
        None,
        description="RocksDB table directory of this worker (default <state_dir>/worker-data); "
        "one per worker process. (faust's own --datadir is read after the app is built, "
        "so it cannot override this.)",
    )
    worker_web_host: str = Field("127.0.0.1", description="Bind address of the worker web.")
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
