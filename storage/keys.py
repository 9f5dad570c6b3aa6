"""Redis schema v1: every key name the pipeline writes, in one place.

Downstream dashboards and bots read these names; changing one is a schema change
(bump ``SCHEMA_VERSION`` and give users a migration).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


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
