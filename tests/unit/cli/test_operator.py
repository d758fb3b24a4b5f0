"""The operator's commands as a terminal shows them."""

from __future__ import annotations

from vfstream.cli.operator import dead_letters_table, runs_table, status_text

RUN = {
    "runId": "r1",
    "campaignId": "c1",
    "key": "scrubbed/x.csv",
    "rowsIn": 1200,
    "valid": 1000,
    "invalid": 200,
    "applied": 1000,
    "expected": 1000,
    "settled": True,
    "settledAt": "2026-11-30T06:22:14.123+00:00",
    "report": "posted",
}


def test_runs_table_has_one_line_a_run_with_thousands_separated() -> None:
    header, _, line = runs_table([RUN]).splitlines()
    assert "applied" in header

    assert [c.strip() for c in line.split("|")] == [
        "c1",
        "scrubbed/x.csv",
        "1,200",
        "1,000",
        "200",
        "1,000 / 1,000",
        "2026-11-30 06:22:14",
        "posted",
    ]
    assert runs_table([]) == "no scoring runs yet"


def test_dead_letter_table_escapes_raw_rows() -> None:
    letter = {
        "at": None,
        "kind": "scoring-row",
        "campaignId": "c1",
        "where": "s3://b/k:2",
        "reasons": ["a", "b"],
        "raw": "\x1b[2J",
    }

    text = dead_letters_table([letter])

    assert "\x1b" not in text and "\\x1b[2J" in text and "a; b" in text
    assert dead_letters_table([]) == "no dead letters"


def test_status_text_names_a_down_endpoint_and_the_total_lag() -> None:
    status = {
        "stack": {
            "kafka": {
                "address": "127.0.0.1:9092",
                "reachable": True,
                "security": "SASL_SSL SCRAM-SHA-512 as 'vfstream'",
            },
            "aws": {"endpoint": "http://127.0.0.1:5000", "reachable": False, "credentials": None},
        },
        "group": {"id": "vfstream", "state": "Empty"},
        "workers": [],
        "topic": "vf-score-records",
        "partitions": [
            {"partition": 0, "owner": None, "committed": None, "end": 5000, "lag": 5000}
        ],
        "lag": 5000,
    }

    text = status_text(status)

    assert "DOWN" in text and "0 worker(s)" in text and "total lag: 5,000" in text
    assert "SASL_SSL SCRAM-SHA-512 as 'vfstream'" in text
    assert "credentials: none found" in text
