import logging

import pytest
from pydantic import ValidationError

from config.settings import Settings


def test_defaults_point_at_the_embedded_stack(monkeypatch):
    for name in ("TICKFLOW_BROKER_URL", "TICKFLOW_REDIS_URL", "TICKFLOW_EMBEDDED"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.bootstrap_servers == "127.0.0.1:29092"
    assert settings.redis_url == "redis://127.0.0.1:26379/0"
    assert settings.use_embedded is True


def test_environment_overrides_with_the_prefix(monkeypatch):
    monkeypatch.setenv("TICKFLOW_BROKER_URL", "kafka://a:1;b:2")
    monkeypatch.setenv("TICKFLOW_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("TICKFLOW_KITE_TOKENS", "[256265, 738561]")
    settings = Settings(_env_file=None)
    assert settings.bootstrap_servers == "a:1,b:2"
    assert settings.topic_partitions == 12
    assert settings.kite_tokens == [256265, 738561]
    assert settings.use_embedded is False  # an external broker was configured


def test_a_bad_value_is_a_clear_validation_error(monkeypatch):
    monkeypatch.setenv("TICKFLOW_TOPIC_PARTITIONS", "zero")
    with pytest.raises(ValidationError, match="topic_partitions"):
        Settings(_env_file=None)


def test_secrets_never_appear_in_repr_str_or_logs(monkeypatch, caplog):
    monkeypatch.setenv("TICKFLOW_KITE_ACCESS_TOKEN", "tok-SECRET-123")
    monkeypatch.setenv("TICKFLOW_REDIS_URL", "redis://user:pw-SECRET-456@redis.example:6380/2")
    settings = Settings(_env_file=None)
    assert settings.kite_access_token.get_secret_value() == "tok-SECRET-123"
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "pw-SECRET-456"
    assert settings.redis_url == "redis://user@redis.example:6380/2"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info(
            "settings: %s / %r / %s", settings, settings, settings.redacted()
        )
    for text in (caplog.text, repr(settings), str(settings), str(settings.redacted())):
        assert "SECRET" not in text
