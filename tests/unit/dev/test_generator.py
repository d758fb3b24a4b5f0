"""The test-data generator must tell the truth about the files it writes.

Every other test that uses generated files trusts the generator's truth (row counts, fan values,
campaign counts). These tests therefore recount from the written bytes with the csv module and
the domain's own row validation (``build_score_record``), never from the generator's internals.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from vfstream.dev.generator import (
    COLUMNS,
    INVALID_KINDS,
    GeneratorConfig,
    ScoringRun,
    expected_counts,
    generate_run,
    main,
    rescore,
)
from vfstream.domain.records import (
    REQUIRED_COLUMNS,
    RecordSource,
    ScoreRecord,
    build_score_record,
    parse_scoring_key,
)

SPEC_HEADER = [
    "globalUserId",
    "id",
    "campaign_id",
    "event_id",
    "hbase",
    "score",
    "localFanscore",
    "accountFanscore",
    "bandScore",
    "isVerified",
    "verdict",
    "nudetect.score",
    "nudetect.scoreBand",
    "review_notes",
    "codes",
    "memberId",
    "email",
    "firstName",
    "lastName",
    "phone",
    "phoneType",
    "phoneConfirmedDate",
    "locale",
]
FANS = 1500


@dataclass
class Recount:
    """What a reader of the file finds, by the SPEC's rules alone."""

    header: list[str]
    records: list[ScoreRecord] = field(default_factory=list)
    raw_valid: list[list[str]] = field(default_factory=list)
    invalid: list[tuple[int, list[str], list[str]]] = field(default_factory=list)

    def fan_values(self) -> dict[str, tuple[bool, bool | None]]:
        values: dict[str, tuple[bool, bool | None]] = {}
        for record in self.records:
            values[record.globalUserId] = (record.isVerified, record.verdict)
        return values

    def counts(self) -> dict[str, int]:
        values = self.fan_values().values()
        return {
            "verified": sum(1 for is_verified, _ in values if is_verified),
            "rejected": sum(1 for is_verified, _ in values if not is_verified),
            "selected": sum(1 for _, verdict in values if verdict is True),
        }


def written(run: ScoringRun, **options: object) -> bytes:
    buffer = io.BytesIO()
    run.write(buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def recount(run: ScoringRun, data: bytes) -> Recount:
    """Parse the bytes as an ingester would: csv module, then the domain's row validation."""
    scoring_key = parse_scoring_key(run.object_key)
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    result = Recount(header=next(reader))
    for row in reader:
        line = reader.line_num
        if len(row) > len(result.header):
            result.invalid.append((line, row, ["row has more fields than the header"]))
            continue
        source = RecordSource(bucket="test-bucket", key=run.object_key, etag="etag", line=line)
        outcome = build_score_record(
            dict(zip(result.header, row, strict=False)), scoring_key, source
        )
        if isinstance(outcome, ScoreRecord):
            result.records.append(outcome)
            result.raw_valid.append(row)
        else:
            result.invalid.append((line, row, outcome))
    return result


@pytest.fixture(scope="module")
def run() -> ScoringRun:
    return generate_run(
        GeneratorConfig(
            campaign_id="c1001",
            campaign_name="summer-tour",
            fans=FANS,
            seed=7,
            invalid_ratio=0.02,
            scored_at=datetime(2026, 10, 20, 12, 0, tzinfo=UTC),
        )
    )


@pytest.fixture(scope="module")
def data(run: ScoringRun) -> bytes:
    return written(run)


@pytest.fixture(scope="module")
def counted(run: ScoringRun, data: bytes) -> Recount:
    return recount(run, data)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(
    run: ScoringRun, data: bytes
) -> None:
    again = generate_run(run.config)
    assert written(again) == data
    assert again.counts() == run.counts()
    other = generate_run(run.config.model_copy(update={"seed": 8}))
    assert written(other) != data


def test_header_is_the_spec_column_order(counted: Recount) -> None:
    assert counted.header == SPEC_HEADER
    assert list(COLUMNS) == SPEC_HEADER


def test_object_key_parses_back_to_campaign_and_time(run: ScoringRun) -> None:
    key = parse_scoring_key(run.object_key)
    assert run.object_key == (
        "scrubbed/registrants.c1001.summer-tour.20261020T120000Z.cleaned.prepared.merged.csv"
    )
    assert (key.campaign_id, key.campaign_name, key.scored_at, key.gzipped) == (
        "c1001",
        "summer-tour",
        datetime(2026, 10, 20, 12, 0, tzinfo=UTC),
        False,
    )
    assert parse_scoring_key(run.gz_object_key).gzipped


def test_expected_row_counts_match_the_written_file(run: ScoringRun, counted: Recount) -> None:
    assert len(counted.records) == run.expected_valid_rows
    assert len(counted.invalid) == run.expected_invalid_rows
    share = run.expected_invalid_rows / (run.expected_valid_rows + run.expected_invalid_rows)
    assert share == pytest.approx(0.02, abs=0.002)


def test_invalid_rows_are_rejected_for_the_kind_the_generator_names(
    run: ScoringRun, counted: Recount
) -> None:
    truth = run.invalid_rows()
    assert [line for line, _, _ in counted.invalid] == [row.line for row in truth]
    assert {row.kind for row in truth} == set(INVALID_KINDS)
    reason_prefix = {
        "id_without_rank": ("id:",),
        "score_out_of_range": ("score:",),
        "score_not_numeric": ("score:",),
        "bad_bool": ("isVerified:", "verdict:"),
        "empty_required": tuple(f"{column}:" for column in REQUIRED_COLUMNS),
        "wrong_campaign": ("campaign_id:",),
        "too_many_fields": ("row has more fields",),
    }
    for (_, row, reasons), expected in zip(counted.invalid, truth, strict=True):
        assert len(reasons) == 1, (expected, reasons)
        assert reasons[0].startswith(reason_prefix[expected.kind]), (expected, reasons, row)
        if expected.kind == "too_many_fields":
            assert len(row) > len(SPEC_HEADER)
        else:
            assert len(row) == len(SPEC_HEADER)


def test_invalid_rows_belong_to_fans_without_any_valid_row(
    run: ScoringRun, counted: Recount
) -> None:
    valid_fans = {record.globalUserId for record in counted.records}
    invalid_fans = {row[0].strip() for _, row, _ in counted.invalid} - {""}
    assert invalid_fans
    assert not invalid_fans & valid_fans
    assert {row.global_user_id for row in run.invalid_rows()}.isdisjoint(valid_fans)
    bigger = generate_run(run.config.model_copy(update={"fans": 3 * FANS, "seed": 11}))
    every_valid_fan = {gid for gid, _, _ in bigger.fan_values()}
    assert invalid_fans.isdisjoint(every_valid_fan), "not even another run's valid fans"


def test_fan_level_values_are_identical_across_a_fans_rows(counted: Recount) -> None:
    per_fan: dict[str, set[tuple[object, ...]]] = {}
    ranks: dict[str, list[int]] = {}
    for record in counted.records:
        fan_level = (
            record.isVerified,
            record.verdict,
            record.score,
            record.email,
            record.firstName,
            record.lastName,
            record.memberId,
        )
        per_fan.setdefault(record.globalUserId, set()).add(fan_level)
        ranks.setdefault(record.globalUserId, []).append(record.rank)
    assert len(per_fan) == FANS
    assert all(len(values) == 1 for values in per_fan.values())
    assert all(len(set(fan_ranks)) == len(fan_ranks) for fan_ranks in ranks.values())
    assert max(len(fan_ranks) for fan_ranks in ranks.values()) == 3
    assert any(0 not in fan_ranks for fan_ranks in ranks.values()), "some fans lack rank 0"


def test_truth_matches_a_recount_of_the_written_file(run: ScoringRun, counted: Recount) -> None:
    truth = {gid: (is_verified, verdict) for gid, is_verified, verdict in run.fan_values()}
    assert counted.fan_values() == truth
    assert counted.counts() == run.counts() == expected_counts([run])["c1001"]
    some_fan = next(iter(truth))
    assert run.fan_value(some_fan) == truth[some_fan]
    assert run.fan_value(run.invalid_rows()[0].global_user_id) is None
    counts = run.counts()
    assert counts["verified"] == pytest.approx(0.8 * FANS, rel=0.1)
    assert counts["selected"] == pytest.approx(0.3 * counts["verified"], rel=0.2)
    pending = sum(1 for _, verdict in truth.values() if verdict is None)
    assert 0 < pending < FANS


def test_values_are_messy_in_the_ways_the_spec_allows(data: bytes, counted: Recount) -> None:
    text = data.decode("utf-8")
    column = {name: index for index, name in enumerate(counted.header)}
    rows = counted.raw_valid
    assert '"Lee, Jr."' in text or '"Smith, III"' in text  # commas force quoting
    assert '"O""Neil"' in text or '"Robert ""Bob"""' in text  # quotes are doubled
    assert any("," in row[column["lastName"]] for row in rows)
    assert any('"' in row[column["firstName"]] + row[column["lastName"]] for row in rows)
    assert any(not row[column["firstName"]].isascii() for row in rows)
    emails = [row[column["email"]] for row in rows]
    assert any(email != email.strip() for email in emails)
    assert any(email.strip() != email.strip().lower() for email in emails)
    assert all(record.email == (record.email or "").strip().lower() for record in counted.records)
    spellings = {row[column["isVerified"]] for row in rows}
    assert {"true", "TRUE", "1", "yes", "false", "0", "no"} <= spellings
    verdicts = {row[column["verdict"]].lower() for row in rows}
    assert verdicts == {"true", "false", ""}
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")


def test_fast_writer_produces_exactly_what_csv_writer_makes_of_the_rows(
    run: ScoringRun, data: bytes
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(run.iter_rows())
    assert buffer.getvalue().encode("utf-8") == data


def test_gzip_output_round_trips_and_leaves_the_file_object_open(
    run: ScoringRun, data: bytes, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    run.write(buffer, gzip=True)
    assert not buffer.closed
    assert gzip.decompress(buffer.getvalue()) == data
    again = io.BytesIO()
    run.write(again, gzip=True)
    assert again.getvalue() == buffer.getvalue(), "gzip output is deterministic too"
    path = tmp_path / run.gz_object_key.rsplit("/", 1)[-1]
    run.write(path)  # the .gz suffix alone asks for compression
    assert gzip.decompress(path.read_bytes()) == data
    plain = tmp_path / "plain.csv"
    run.write(plain)
    assert plain.read_bytes() == data


def test_bom_option_prefixes_a_utf8_byte_order_mark(run: ScoringRun, data: bytes) -> None:
    assert written(run, bom=True) == b"\xef\xbb\xbf" + data


def test_rescore_flips_about_the_requested_share(run: ScoringRun, counted: Recount) -> None:
    later = rescore(run, flip_ratio=0.1, verdict_change_ratio=0.2)
    assert later.scored_at > run.scored_at
    assert later.object_key != run.object_key
    before = counted.fan_values()
    after_count = recount(later, written(later))
    after = after_count.fan_values()
    assert after.keys() == before.keys()
    flipped = sum(1 for gid in before if before[gid][0] != after[gid][0])
    changed = sum(1 for gid in before if before[gid][1] != after[gid][1])
    assert flipped == pytest.approx(0.1 * FANS, abs=0.02 * FANS)
    assert changed == pytest.approx(0.2 * FANS, abs=0.02 * FANS)
    assert (later.flipped_verified, later.changed_verdicts) == (flipped, changed)
    emails_before = {record.globalUserId: record.email for record in counted.records}
    emails_after = {record.globalUserId: record.email for record in after_count.records}
    assert emails_after == emails_before, "contact data stays across a re-scoring"
    assert len(after_count.invalid) == later.expected_invalid_rows


def test_rescore_must_be_later_and_ratios_must_be_shares(run: ScoringRun) -> None:
    with pytest.raises(ValueError, match="later"):
        rescore(run, scored_at=run.scored_at)
    with pytest.raises(ValueError, match="flip_ratio"):
        rescore(run, flip_ratio=1.5)
    assert rescore(run.config).scored_at == run.scored_at + timedelta(hours=6)


def apply_in_arrival_order(files: list[tuple[ScoringRun, bytes]]) -> dict[str, dict[str, int]]:
    """SPEC 3 by the letter: per-record state with the stale rule and the count-delta table."""
    state: dict[str, tuple[datetime, bool, bool | None]] = {}
    counts: dict[str, Counter[str]] = {}
    for run, data in files:
        for record in recount(run, data).records:
            campaign = counts.setdefault(record.campaignId, Counter())
            old = state.get(record.key)
            if old is not None and record.scoredAt < old[0]:
                continue  # stale
            if old is None:
                campaign["verified" if record.isVerified else "rejected"] += 1
            elif old[1] != record.isVerified:
                campaign["verified"] += 1 if record.isVerified else -1
                campaign["rejected"] += -1 if record.isVerified else 1
            was_selected = old is not None and old[2] is True
            if record.verdict is True and not was_selected:
                campaign["selected"] += 1
            elif was_selected and record.verdict is not True:
                campaign["selected"] -= 1
            state[record.key] = (record.scoredAt, record.isVerified, record.verdict)
    return {
        campaign: {name: counter[name] for name in ("verified", "rejected", "selected")}
        for campaign, counter in counts.items()
    }


def test_expected_counts_take_each_fans_newest_run_in_any_arrival_order(
    run: ScoringRun, data: bytes
) -> None:
    later = rescore(run, flip_ratio=0.15, verdict_change_ratio=0.15)
    other = generate_run(
        GeneratorConfig(campaign_id="c2002", campaign_name="winter", fans=300, seed=3)
    )
    files = [(run, data), (later, written(later)), (other, written(other))]
    in_order = apply_in_arrival_order(files)
    stale_last = apply_in_arrival_order([files[1], files[2], files[0]])
    assert in_order == stale_last, "an older file arriving late changes nothing"
    assert expected_counts([run, later, other]) == in_order
    assert expected_counts([later, other, run]) == in_order
    assert in_order["c1001"] == later.counts() != run.counts()
    assert in_order["c2002"] == other.counts()


def test_expected_counts_keep_fans_only_an_older_larger_run_has(run: ScoringRun) -> None:
    """A newer file with fewer fans leaves the others as the older file set them."""
    smaller_later = generate_run(
        run.config.model_copy(
            update={"fans": 500, "seed": 99, "scored_at": run.scored_at + timedelta(days=1)}
        )
    )
    files = [(run, written(run)), (smaller_later, written(smaller_later))]
    counts = expected_counts([smaller_later, run])["c1001"]
    assert counts == apply_in_arrival_order(files)["c1001"]
    assert counts["verified"] + counts["rejected"] == FANS


def test_config_rejects_values_that_would_break_the_object_key() -> None:
    with pytest.raises(ValidationError):
        GeneratorConfig(campaign_id="c.1", campaign_name="demo", fans=1)
    with pytest.raises(ValidationError):
        GeneratorConfig(campaign_id="c1", campaign_name="a/b", fans=1)
    with pytest.raises(ValidationError):
        GeneratorConfig(campaign_id="c1", campaign_name="demo", fans=1, invalid_kinds=("nope",))
    naive = GeneratorConfig(
        campaign_id="c1", campaign_name="demo", fans=1, scored_at=datetime(2026, 1, 2, 3, 4, 5, 6)
    )
    assert naive.scored_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_zero_invalid_ratio_writes_only_valid_rows() -> None:
    clean = generate_run(
        GeneratorConfig(campaign_id="c1", campaign_name="demo", fans=200, invalid_ratio=0.0)
    )
    counted = recount(clean, written(clean))
    assert clean.expected_invalid_rows == 0
    assert not counted.invalid
    assert len(counted.records) == clean.expected_valid_rows


def test_command_line_writes_files_and_prints_their_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "one.csv"
    common = ["--fans", "300", "--campaign-id", "c9", "--campaign-name", "demo", "--seed", "1"]
    assert main([*common, "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    (summary,) = report["runs"]
    run = generate_run(GeneratorConfig(campaign_id="c9", campaign_name="demo", fans=300, seed=1))
    assert out.read_bytes() == written(run)
    assert summary["expected_valid_rows"] == run.expected_valid_rows
    assert summary["expected_invalid_rows"] == run.expected_invalid_rows
    assert report["expected_counts"] == {"c9": recount(run, out.read_bytes()).counts()}

    folder = tmp_path / "runs"
    assert main([*common, "--out", str(folder), "--gzip", "--rescores", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    paths = [Path(item["path"]) for item in report["runs"]]
    assert [path.name for path in paths] == [
        item["object_key"].rsplit("/", 1)[-1] for item in report["runs"]
    ]
    assert all(path.name.endswith(".csv.gz") and path.exists() for path in paths)
    times = [parse_scoring_key(item["object_key"]).scored_at for item in report["runs"]]
    assert times == sorted(times) and len(set(times)) == 3
    last = report["runs"][-1]
    assert report["expected_counts"]["c9"] == last["counts"]
    assert last["flipped_verified"] == 30
