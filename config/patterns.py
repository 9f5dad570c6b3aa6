"""The pattern rules' configuration, built from the settings.

Lives here, not in ``core``, because the core must stay free of the settings object (it
is pure and testable with plain values); this is the one place that maps setting names
to :class:`core.patterns.PatternConfig` fields.
"""

from __future__ import annotations

from config.settings import Settings
from core.patterns import PatternConfig, make_config


def pattern_config(settings: Settings) -> PatternConfig:
    """The rules' configuration; a ``ValueError`` names a bad pattern setting at start-up.

    The three mapping settings are merged over the spec's defaults (see
    :func:`core.patterns.make_config`), so an environment variable may name only the
    patterns or regimes it changes.
    """
    return make_config(
        volume_thresholds=settings.pattern_volume_thresholds,
        volume_multipliers=settings.pattern_volume_multipliers,
        price_multipliers=settings.pattern_price_multipliers,
        spike_min_move=settings.pattern_spike_min_move,
        volume_breakout_move=settings.pattern_volume_breakout_move,
        divergence_move=settings.pattern_divergence_move,
        divergence_low_ratio=settings.pattern_divergence_low_ratio,
        momentum_move=settings.pattern_momentum_move,
        momentum_rsi_max=settings.pattern_momentum_rsi_max,
        momentum_rsi_min=settings.pattern_momentum_rsi_min,
        breakout_lookback=settings.pattern_breakout_lookback,
        breakout_move=settings.pattern_breakout_move,
        breakout_rsi_min=settings.pattern_breakout_rsi_min,
        breakout_rsi_max=settings.pattern_breakout_rsi_max,
        reversal_first_leg=settings.pattern_reversal_first_leg,
        reversal_second_leg=settings.pattern_reversal_second_leg,
        hidden_max_ratio=settings.pattern_hidden_max_ratio,
        hidden_rsi_min=settings.pattern_hidden_rsi_min,
        hidden_rsi_max=settings.pattern_hidden_rsi_max,
        hidden_max_move=settings.pattern_hidden_max_move,
        cooldown=settings.pattern_cooldown,
        stop_atr_multiple=settings.pattern_stop_atr_multiple,
        stop_max_pct=settings.pattern_stop_max_pct,
    )
