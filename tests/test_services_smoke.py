import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition


def test_redis_fixture_is_a_real_server(redis_endpoint):
    client = redis.Redis.from_url(redis_endpoint.url)
    client.set("smoke", "1")
    assert client.info("server")["redis_version"]
    assert client.get("smoke") == b"1"


async def test_broker_fixture_round_trips_a_record(broker):
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait("smoke-topic", b"v", key=b"k", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition("smoke-topic", 0)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"v")
