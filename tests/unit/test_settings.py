"""One frozen settings object, read once from VFSTREAM_* variables; the local stack's
own fields apart in DevStackSettings, under the same variable names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vfstream.settings import DevStackSettings, Settings


def test_settings_cannot_change_once_read() -> None:
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.topic_partitions = 12  # type: ignore[misc]
    assert settings.model_copy(update={"topic_partitions": 12}).topic_partitions == 12
    assert settings.topic_partitions == 6


def test_the_local_stacks_fields_come_from_the_same_variable_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VFSTREAM_KAFKA_HEAP", "2g")
    monkeypatch.setenv("VFSTREAM_FLUSH_EVERY_RECORDS", "500")

    settings = Settings()

    assert settings.dev.kafka_heap == "2g"
    assert settings.flush_every_records == 500
    assert "kafka_heap" not in Settings.model_fields
    assert "kafka_heap" in DevStackSettings.model_fields


def test_a_child_process_gets_every_setting_back_from_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(
        app_id="elsewhere",
        flush_every_seconds=0.5,
        dev=DevStackSettings(kafka_controller_port=19093),
    )

    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)

    assert Settings() == settings


@pytest.mark.parametrize("tokens", ["short-one", "change-me", "fine-and-long-token-1,change-me"])
def test_a_short_or_placeholder_web_token_is_refused_without_showing_it(tokens: str) -> None:
    with pytest.raises(ValidationError, match="VFSTREAM_WEB_AUTH_TOKENS") as refused:
        Settings(web_auth_tokens=tokens)  # type: ignore[arg-type]

    assert "short-one" not in str(refused.value)


def test_long_tokens_of_a_rotation_are_accepted() -> None:
    settings = Settings(web_auth_tokens="a" * 16 + ", " + "b" * 40)  # type: ignore[arg-type]

    assert settings.web_tokens == ("a" * 16, "b" * 40)
