"""Session-wide real services (see tests/support/services.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import BrokerEndpoint, RedisEndpoint, redis_server, tansu_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerEndpoint]:
    """One Tansu broker for the session; tests use unique topic names."""
    with tansu_broker(tmp_path_factory.mktemp("broker")) as endpoint:
        yield endpoint


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerEndpoint]:
    """A broker of this test alone, for tests that pause or kill it."""
    with tansu_broker(tmp_path_factory.mktemp("own-broker")) as endpoint:
        if endpoint.process is None:
            pytest.skip("needs a broker process it owns (TICKFLOW_TEST_BROKER_URL is set)")
        yield endpoint


@pytest.fixture(scope="session")
def redis_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisEndpoint]:
    with redis_server(tmp_path_factory.mktemp("redis")) as endpoint:
        yield endpoint
