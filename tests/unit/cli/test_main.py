"""The command line's parser and its quiet logging."""

from __future__ import annotations

import logging

import pytest

from vfstream.cli.main import _OursOnly, build_parser, main


@pytest.mark.parametrize(
    "argv",
    [["--verbose", "status"], ["status", "--verbose"], ["status", "-v"], ["-v", "runs"]],
)
def test_verbose_is_taken_before_or_after_the_command(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).verbose is True


def test_without_verbose_it_is_off() -> None:
    assert build_parser().parse_args(["status"]).verbose is False


def test_every_operator_command_has_json_and_dead_letters_its_filters() -> None:
    parser = build_parser()
    letters = parser.parse_args(["dead-letters", "--campaign", "c1", "--kind", "k", "--limit", "3"])

    assert (letters.campaign, letters.kind, letters.limit, letters.json) == ("c1", "k", 3, False)
    for command in ("runs", "dead-letters", "status"):
        assert parser.parse_args([command, "--json"]).json is True
    assert parser.parse_args(["dev", "reset"]).action == "reset"


def record(name: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, "message", None, None)


def test_only_vfstreams_own_lines_pass_the_quiet_filter() -> None:
    quiet = _OursOnly()

    assert quiet.filter(record("vfstream"))
    assert quiet.filter(record("vfstream.ops.replay"))
    assert not quiet.filter(record("aiokafka.consumer"))
    assert not quiet.filter(record("vfstreamer"))


def test_refused_settings_exit_2_naming_the_setting_and_showing_no_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vfstream.settings import get_settings

    get_settings.cache_clear()
    monkeypatch.setenv("VFSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("VFSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("VFSTREAM_KAFKA_SASL_PASSWORD", "pw-that-must-not-show")
    try:
        status = main(["status"])
    finally:
        get_settings.cache_clear()

    err = capsys.readouterr().err
    assert status == 2
    assert "VFSTREAM_KAFKA_SASL_USERNAME" in err
    assert "pw-that-must-not-show" not in err
