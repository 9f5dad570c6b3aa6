"""The commit gate wrapped around faust-streaming's own offset choice (its real code)."""

from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from topology.commit_gate import CommitGate

TICKS = TP("ticks", 3)
OTHER = TP("bars", 3)


def consumer_with_acks(acked: dict[TP, list[int]], committed: dict[TP, int]) -> SimpleNamespace:
    """Just the state Faust's ``Consumer._new_offset`` reads, with the real method bound."""
    state = SimpleNamespace(
        _acked=defaultdict(list, {tp: list(offsets) for tp, offsets in acked.items()}),
        _acked_index=defaultdict(set, {tp: set(offsets) for tp, offsets in acked.items()}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, committed),
    )
    state._new_offset = Consumer._new_offset.__get__(state)
    return state


def test_commits_stop_at_the_gate_and_resume_when_it_moves():
    consumer = consumer_with_acks({TICKS: [10, 11, 12, 13, 14, 15]}, {TICKS: 9})
    gate = CommitGate("ticks")
    gate.install(consumer)
    gate.hold(3, 10)
    assert consumer._new_offset(TICKS) is None, "nothing durable yet: nothing to commit"
    assert consumer._acked[TICKS] == [10, 11, 12, 13, 14, 15], "acks kept for later"

    gate.release(3, 13)
    assert consumer._new_offset(TICKS) == 13  # offsets 10..12 durable: resume at 13
    consumer._committed_offset[TICKS] = 12
    assert consumer._acked[TICKS] == [13, 14, 15]

    gate.release(3, 12)  # a stale release never moves the gate back
    assert gate.limits[3] == 13
    gate.release(3, 100)
    assert consumer._new_offset(TICKS) == 16


def test_other_topics_and_ungated_partitions_commit_as_faust_would():
    consumer = consumer_with_acks({OTHER: [5, 6, 7], TP("ticks", 1): [0, 1]}, {})
    gate = CommitGate("ticks")
    gate.install(consumer)
    gate.install(consumer)  # idempotent: not wrapped twice
    gate.hold(3, 0)
    assert consumer._new_offset(OTHER) == 8
    assert consumer._new_offset(TP("ticks", 1)) == 2


def test_a_gap_in_the_acknowledgements_still_holds_faust_back():
    consumer = consumer_with_acks({TICKS: [20, 21, 23, 24]}, {TICKS: 19})
    gate = CommitGate("ticks")
    gate.install(consumer)
    gate.release(3, 30)
    assert consumer._new_offset(TICKS) == 22  # 22 not acknowledged yet
    assert consumer._acked[TICKS] == [23, 24]
