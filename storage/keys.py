"""Redis schema v1: every key name the pipeline writes, in one place.

Downstream dashboards and bots read these names; changing one is a schema change
(bump ``SCHEMA_VERSION`` and give users a migration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMA_VERSION = 1

#: Every v1 key family as (name, pattern of the key without the prefix). Used to tell a
#: v1 keyspace from a legacy or foreign one (the schema check at start-up, the migration
#: when source and target share a database) without listing the keys anywhere else.
FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("tick", r"tick:\d+"),
        ("bars", r"bars:1m:\d+"),
        ("vol", r"vol:\d+"),
        ("ind", r"ind:\d+"),
        ("greeks", r"greeks:\d+"),
        ("baseline", r"baseline:\d+"),
        ("instrument", r"instrument:\d+"),
        ("symbol", r"symbol:[A-Z]+:.+"),
        ("regime", r"regime"),
        ("alerts", r"alerts(?::ids)?"),
        ("schema", r"tickflow:schema"),
        ("migration", r"tickflow:migration:.+"),
    )
)


@dataclass(frozen=True)
class Keys:
    prefix: str = ""

    def tick(self, token: int) -> str:
        return f"{self.prefix}tick:{token}"

    def bars_1m(self, token: int) -> str:
        return f"{self.prefix}bars:1m:{token}"

    def vol(self, token: int) -> str:
        return f"{self.prefix}vol:{token}"

    def indicators(self, token: int) -> str:
        return f"{self.prefix}ind:{token}"

    def greeks(self, token: int) -> str:
        return f"{self.prefix}greeks:{token}"

    def baseline(self, token: int) -> str:
        """Volume baselines imported from the legacy system (per bucket resolution)."""
        return f"{self.prefix}baseline:{token}"

    def instrument(self, token: int) -> str:
        return f"{self.prefix}instrument:{token}"

    def symbol(self, exchange: str, tradingsymbol: str) -> str:
        return f"{self.prefix}symbol:{exchange}:{tradingsymbol}"

    @property
    def regime(self) -> str:
        return f"{self.prefix}regime"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def alerts_live(self) -> str:
        return f"{self.prefix}alerts:live"

    @property
    def schema(self) -> str:
        return f"{self.prefix}tickflow:schema"

    @property
    def instruments_digest(self) -> str:
        """SHA-256 of the instrument master last published (workers skip an unchanged one)."""
        return f"{self.prefix}tickflow:instruments:digest"

    # --- bookkeeping of scripts/migrate_redis.py ---------------------------------------
    @property
    def migration_state(self) -> str:
        return f"{self.prefix}tickflow:migration:state"

    @property
    def migration_checkpoint(self) -> str:
        return f"{self.prefix}tickflow:migration:checkpoint"

    def migration_quarantine(self, db: int, legacy_key: str) -> str:
        return f"{self.prefix}tickflow:migration:quarantine:{db}:{legacy_key}"

    @property
    def migration_quarantine_pattern(self) -> str:
        """SCAN MATCH pattern of every quarantine record (glob characters escaped)."""
        return f"{_glob_escape(self.prefix)}tickflow:migration:quarantine:*"

    @property
    def keyspace_pattern(self) -> str:
        """SCAN MATCH pattern of every key under this prefix (the whole DB without one)."""
        return f"{_glob_escape(self.prefix)}*"

    def family(self, key: str) -> str | None:
        """The v1 family a key belongs to (``"tick"``, ``"alerts"``...), or ``None`` for a
        key that is not a v1 key of this prefix."""
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :]
        for name, pattern in FAMILIES:
            if pattern.fullmatch(rest):
                return name
        return None


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
