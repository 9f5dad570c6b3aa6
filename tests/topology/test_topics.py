import uuid

import pytest
from aiokafka import AIOKafkaProducer

from topology.topics import TopicMismatchError, TopicSpec, ensure_topics


async def test_creates_topics_with_their_partition_count_and_is_idempotent(broker):
    name = f"topics-{uuid.uuid4().hex[:8]}"
    counts = await ensure_topics(broker.bootstrap, [TopicSpec(name, 6)])
    assert counts == {name: 6}
    assert await ensure_topics(broker.bootstrap, [TopicSpec(name, 6)]) == {name: 6}


async def test_a_topic_with_another_partition_count_is_refused(broker):
    name = f"auto-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(name, b"x")  # the broker auto-creates it its own way
    finally:
        await producer.stop()
    with pytest.raises(TopicMismatchError, match=name):
        await ensure_topics(broker.bootstrap, [TopicSpec(name, 7)])


async def test_an_unreachable_broker_is_a_clear_error():
    with pytest.raises(ConnectionError, match="unreachable"):
        await ensure_topics("127.0.0.1:1", [TopicSpec("x", 1)], timeout=1.0)
