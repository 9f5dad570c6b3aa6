"""The hand-packed tick HSET against redis-py's own packer, and the hash's values."""

from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection

from core.tick import Depth, DepthLevel, Tick
from storage.tick_hash import TICK_FIELDS, pack_tick_hset, tick_hash, tick_values


def _tick(price: float, bid: float | None) -> Tick:
    depth = (
        None
        if bid is None
        else Depth.from_levels((DepthLevel(7, bid, 2),), (DepthLevel(9, bid + 0.05, 3),), 100.0)
    )
    return Tick(408065, "full", True, price, 5, price, 1000, 1, 2, price, price, price, price,
                0.5, 1_700_000_000, 10, 11, 9, 1_700_000_001, depth)  # fmt: skip


@given(
    price=st.floats(0.05, 1e6, allow_nan=False),
    bid=st.none() | st.floats(0.05, 1e5, allow_nan=False),
    symbol=st.text(max_size=30),
)
def test_packed_hset_is_byte_identical_to_redis_py(price, bid, symbol):
    tick = _tick(price, bid)
    fields = tick_hash(tick, 1_700_000_001_250, symbol, "NSE")
    args = [part for item in fields.items() for part in item]
    expected = b"".join(Connection().pack_command("HSET", "tick:408065", *args))
    assert pack_tick_hset("tick:408065", tick_values(tick, 1_700_000_001_250, symbol, "NSE")) == (
        expected
    )


def test_best_bid_and_ask_come_from_the_first_depth_level():
    tick = _tick(1500.5, 1500.45)
    values = dict(zip(TICK_FIELDS, tick_values(tick, None), strict=True))
    assert tick.depth is not None
    best_bid, best_ask = tick.depth.bids[0], tick.depth.asks[0]
    assert values["best_bid"] == str(best_bid.price) == "1500.45"
    assert values["best_bid_qty"] == str(best_bid.quantity) == "7"
    assert values["best_ask"] == str(best_ask.price) == "1500.5"
    assert values["best_ask_qty"] == "9"
    assert values["exchange"] == "NSE" and values["received_at"] == ""
    no_depth = dict(zip(TICK_FIELDS, tick_values(_tick(10.0, None), None), strict=True))
    assert no_depth["best_bid"] == no_depth["best_ask_qty"] == ""
