"""The worker's recent activity series (issue #15)."""

from __future__ import annotations

from vfstream.domain.activity import LAG_SAMPLES, RATE_SAMPLES, ActivityLog


def test_rates_are_records_per_second_between_samples() -> None:
    log = ActivityLog()
    for second, total in enumerate([0, 100, 300, 300]):
        log.sample_records(1000.0 + second, total)
    assert [r["perSecond"] for r in log.rates()] == [100.0, 200.0, 0.0]


def test_series_keep_the_last_minutes_only() -> None:
    log = ActivityLog()
    for second in range(RATE_SAMPLES * 2):
        log.sample_records(float(second), second)
        log.sample_lag(float(second), {0: second})
    body = log.as_json()
    assert len(body["rates"]) == RATE_SAMPLES
    assert len(body["lag"]) == LAG_SAMPLES
    assert body["lag"][-1]["partitions"] == {"0": RATE_SAMPLES * 2 - 1}
