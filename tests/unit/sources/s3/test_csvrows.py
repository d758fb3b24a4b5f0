"""Behaviour of the streaming scoring-file reader over decoded S3 bodies (SPEC 2.1)."""

from __future__ import annotations

import gzip
import io
import zlib

import pytest

from tests.support.rows import MINIMAL_ROW
from vfstream.domain.records import MAX_ROW_BYTES
from vfstream.errors import FileRejected
from vfstream.sources.s3.csvrows import CsvRow, printable_raw, read_scoring_rows
from vfstream.sources.s3.s3body import open_text

HEADER = "globalUserId,id,campaign_id,event_id,score,isVerified\n"
GZIP_FAULTS = (gzip.BadGzipFile, OSError, EOFError, zlib.error)


def line(user: str, event: str = "ev1", rank: int = 0) -> str:
    return f"{user},{user}{rank:03d},c1,{event},0.5,true\n"


def rows_of(data: bytes, gzipped: bool = False) -> list[CsvRow]:
    return list(read_scoring_rows(open_text(io.BytesIO(data), gzipped)))


def users(rows: list[CsvRow]) -> list[tuple[int, str]]:
    return [(row.line, row.values.get("globalUserId", "")) for row in rows]


def test_plain_rows_have_values_by_column_and_their_line_numbers() -> None:
    rows = rows_of((HEADER + line("u1") + line("u2")).encode())

    assert users(rows) == [(2, "u1"), (3, "u2")]
    assert rows[0].values == MINIMAL_ROW
    assert rows[0].raw == line("u1")
    assert all(row.reasons == [] for row in rows)


def test_utf8_byte_order_mark_is_accepted() -> None:
    rows = rows_of(b"\xef\xbb\xbf" + (HEADER + line("u1")).encode())

    assert users(rows) == [(2, "u1")]
    assert "globalUserId" in rows[0].values
    assert rows[0].reasons == []


def test_crlf_line_ends_are_accepted() -> None:
    data = (HEADER + line("u1") + line("u2")).replace("\n", "\r\n").encode()

    rows = rows_of(data)

    assert users(rows) == [(2, "u1"), (3, "u2")]
    assert rows[0].values["isVerified"] == "true"
    assert rows[0].reasons == []
    assert printable_raw(rows[0].raw) == line("u1").rstrip("\n")


def test_columns_may_come_in_any_order_and_unknown_ones_are_dropped() -> None:
    data = (
        "isVerified,extra,score,event_id,campaign_id,id,globalUserId\ntrue,x,0.5,ev1,c1,u1000,u1\n"
    )

    (row,) = rows_of(data.encode())

    assert row.values == MINIMAL_ROW


def test_quoted_fields_keep_commas_escaped_quotes_and_newlines() -> None:
    data = (
        HEADER
        + 'u1,u1000,c1,"ev, 1",0.5,true\n'
        + 'u2,u2000,c1,"say ""hi""",0.5,true\n'
        + 'u3,u3000,c1,"first\nsecond\r\nthird",0.5,true\n'
        + line("u4")
    )

    rows = rows_of(data.encode())

    assert [row.values["event_id"] for row in rows] == [
        "ev, 1",
        'say "hi"',
        "first\nsecond\r\nthird",
        "ev1",
    ]
    assert users(rows) == [(2, "u1"), (3, "u2"), (4, "u3"), (7, "u4")]
    assert rows[2].raw == 'u3,u3000,c1,"first\nsecond\r\nthird",0.5,true\n'
    assert all(row.reasons == [] for row in rows)


def test_row_with_more_fields_than_the_header_is_flagged() -> None:
    rows = rows_of((HEADER + "u1,u1000,c1,ev1,0.5,true,surplus\n" + line("u2")).encode())

    assert rows[0].reasons == ["row: 7 fields but the header has 6"]
    assert rows[1].reasons == []


def test_row_with_fewer_fields_keeps_only_the_present_columns() -> None:
    (row,) = rows_of((HEADER + "u1,u1000,c1\n").encode())

    assert row.values == {"globalUserId": "u1", "id": "u1000", "campaign_id": "c1"}
    assert row.reasons == []  # the missing required values are the row validator's to report


def test_row_longer_than_64_kib_is_flagged_without_swallowing_the_next_rows() -> None:
    long_row = f"u1,u1000,c1,{'x' * (MAX_ROW_BYTES + 10)},0.5,true\n"

    rows = rows_of((HEADER + long_row + line("u2") + line("u3")).encode())

    assert users(rows) == [(2, "u1"), (3, "u2"), (4, "u3")]
    assert rows[0].reasons == ["row: longer than 64 KiB"]
    assert len(rows[0].raw) <= MAX_ROW_BYTES + 1  # never held whole
    assert rows[1].reasons == rows[2].reasons == []


def test_overlong_quoted_field_does_not_swallow_the_next_rows() -> None:
    long_row = f'u1,u1000,c1,"{"x" * (MAX_ROW_BYTES + 10)}",0.5,true\n'

    rows = rows_of((HEADER + long_row + line("u2") + line("u3")).encode())

    assert users(rows) == [(2, "u1"), (3, "u2"), (4, "u3")]
    assert rows[0].reasons == ["row: longer than 64 KiB"]
    assert rows[1].values["event_id"] == "ev1"
    assert rows[1].reasons == rows[2].reasons == []


def test_multi_line_row_longer_than_64_kib_is_flagged_and_line_numbers_stay_right() -> None:
    lines = 3 * MAX_ROW_BYTES // 100 // 2
    long_row = 'u1,u1000,c1,"' + ("y" * 99 + "\n") * lines + '",0.5,true\n'

    rows = rows_of((HEADER + long_row + line("u2")).encode())

    assert users(rows) == [(2, "u1"), (2 + lines + 1, "u2")]
    assert rows[0].reasons == ["row: longer than 64 KiB"]
    assert rows[1].reasons == []


def test_row_is_measured_in_bytes_not_characters() -> None:
    wide = "é" * (MAX_ROW_BYTES // 2 + 10)  # fewer than 64 Ki characters, more than 64 KiB
    rows = rows_of((HEADER + f"u1,u1000,c1,{wide},0.5,true\n" + line("u2")).encode())

    assert rows[0].reasons == ["row: longer than 64 KiB"]
    assert rows[1].reasons == []


def test_row_just_under_64_kib_is_accepted() -> None:
    field = "z" * (MAX_ROW_BYTES - 100)

    (row,) = rows_of((HEADER + f"u1,u1000,c1,{field},0.5,true\n").encode())

    assert row.reasons == []
    assert row.values["event_id"] == field


def test_invalid_utf8_flags_only_its_row_and_shows_the_bytes_escaped() -> None:
    data = (
        HEADER.encode()
        + b"u1,u1000,c1,ev\xff\xfe1,0.5,true\n"
        + "u2,u2000,c1,év,0.5,true\n".encode()
    )

    rows = rows_of(data)

    assert users(rows) == [(2, "u1"), (3, "u2")]
    assert rows[0].reasons == ["row: bytes are not valid UTF-8"]
    assert printable_raw(rows[0].raw) == "u1,u1000,c1,ev\\xff\\xfe1,0.5,true"
    assert rows[1].reasons == []
    assert rows[1].values["event_id"] == "év"
    assert printable_raw(rows[1].raw) == "u2,u2000,c1,év,0.5,true"


def test_truncated_multibyte_sequence_is_invalid_utf8() -> None:
    data = HEADER.encode() + b"u1,u1000,c1,ev\xc3,0.5,true\n" + line("u2").encode()

    rows = rows_of(data)

    assert rows[0].reasons == ["row: bytes are not valid UTF-8"]
    assert "\\xc3" in printable_raw(rows[0].raw)
    assert rows[1].reasons == []


def test_unterminated_quote_is_flagged_as_malformed_csv() -> None:
    rows = rows_of((HEADER + 'u1,u1000,c1,"ev1,0.5,true\n').encode())

    assert len(rows) == 1
    assert rows[0].line == 2
    assert any(reason.startswith("row: malformed CSV") for reason in rows[0].reasons)


def test_blank_line_in_the_middle_is_skipped() -> None:
    rows = rows_of((HEADER + line("u1") + "\n" + "\r\n" + line("u2")).encode())

    assert users(rows) == [(2, "u1"), (5, "u2")]


def test_blank_lines_before_the_header_are_skipped() -> None:
    rows = rows_of(("\n\n" + HEADER + line("u1")).encode())

    assert users(rows) == [(4, "u1")]


def test_last_row_without_a_line_end_is_read() -> None:
    rows = rows_of((HEADER + line("u1") + line("u2").rstrip("\n")).encode())

    assert users(rows) == [(2, "u1"), (3, "u2")]
    assert rows[1].values["isVerified"] == "true"


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n", b"\r\n\r\n"])
def test_empty_file_fails_as_having_no_header(data: bytes) -> None:
    with pytest.raises(FileRejected, match="no header row"):
        rows_of(data)


def test_header_only_file_has_no_rows() -> None:
    assert rows_of(HEADER.encode()) == []
    assert rows_of(HEADER.rstrip("\n").encode()) == []


def test_header_without_required_columns_fails_the_file() -> None:
    with pytest.raises(FileRejected, match="lacks required columns: event_id"):
        rows_of(b"globalUserId,id,campaign_id,score,isVerified\nu1,u1000,c1,0.5,true\n")


def test_header_repeating_a_known_column_fails_the_file() -> None:
    with pytest.raises(FileRejected, match="repeats columns: score"):
        rows_of((HEADER.rstrip("\n") + ",score\n" + line("u1")).encode())


def test_header_longer_than_64_kib_fails_the_file() -> None:
    with pytest.raises(FileRejected, match="header row is longer than 64 KiB"):
        rows_of(("h" * (MAX_ROW_BYTES + 10) + "\n" + HEADER).encode())


def test_header_with_bom_and_padding_is_cleaned() -> None:
    data = "\ufeff globalUserId , id,campaign_id,event_id,score,isVerified\n" + line("u1")

    (row,) = rows_of(data.encode())

    assert row.values["globalUserId"] == "u1"


def test_gzip_round_trip() -> None:
    text = HEADER + line("u1") + 'u2,u2000,c1,"é, ""q""\nx",0.5,true\n' + line("u3")

    rows = rows_of(gzip.compress(b"\xef\xbb\xbf" + text.encode()), gzipped=True)

    assert users(rows) == [(2, "u1"), (3, "u2"), (5, "u3")]
    assert rows[1].values["event_id"] == 'é, "q"\nx'
    assert all(row.reasons == [] for row in rows)


def test_gzip_round_trip_of_many_rows() -> None:
    text = HEADER + "".join(line(f"u{n}") for n in range(5000))

    rows = rows_of(gzip.compress(text.encode()), gzipped=True)

    assert len(rows) == 5000
    assert rows[-1].line == 5001
    assert rows[-1].values["globalUserId"] == "u4999"


def _big_gzip() -> bytes:
    return gzip.compress((HEADER + "".join(line(f"u{n}") for n in range(2000))).encode())


def test_data_that_is_not_gzip_raises_when_read() -> None:
    with pytest.raises(GZIP_FAULTS):
        rows_of((HEADER + line("u1")).encode(), gzipped=True)


def test_gzip_with_corrupt_deflate_data_raises_when_read() -> None:
    data = bytearray(_big_gzip())
    data[40] ^= 0xFF

    with pytest.raises(GZIP_FAULTS):
        rows_of(bytes(data), gzipped=True)


def test_gzip_with_wrong_checksum_raises_when_read_to_the_end() -> None:
    data = bytearray(_big_gzip())
    data[-6] ^= 0xFF  # inside the CRC32 of the trailer

    with pytest.raises(GZIP_FAULTS):
        rows_of(bytes(data), gzipped=True)


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.99])
def test_truncated_gzip_raises_eof_error_when_read_to_the_end(keep: float) -> None:
    data = _big_gzip()

    with pytest.raises(EOFError):
        rows_of(data[: int(len(data) * keep)], gzipped=True)


def test_rows_stream_before_a_gzip_fault_is_reached() -> None:
    # The ingestor must discard these: the whole file fails once the fault is raised.
    data = _big_gzip()
    stream = read_scoring_rows(open_text(io.BytesIO(data[: len(data) // 2]), gzipped=True))

    first = next(stream)

    assert first.line == 2
    with pytest.raises(EOFError):
        list(stream)


def test_printable_raw_drops_only_the_line_end() -> None:
    assert printable_raw("a,b\r\n") == "a,b"
    assert printable_raw('a,"b\nc"\n') == 'a,"b\nc"'
    assert printable_raw("é,\udcff\n") == "é,\\xff"


# --- resynchronisation (issue #12): rows inside a field are never read as rows ----------------


def smuggled_field(size: int, fans: int) -> str:
    """A quoted field of about ``size`` characters: short lines of filler past the csv
    module's own 128 KiB field limit, then lines that look like valid rows."""
    inner = "".join(line(f"smuggled{n}") for n in range(fans))
    filler = ("z" * 99 + "\n") * max(0, (size - len(inner)) // 100)
    return '"' + filler + inner + '"'


def test_a_190kb_quoted_field_is_one_invalid_row_and_no_row_inside_it_is_read() -> None:
    # The reported case: 4 valid rows and one 190 KB field gave in=120, valid=119.
    bad = f"bad1,bad1000,c1,{smuggled_field(190_000, 115)},0.5,true\n"
    data = HEADER + line("u1") + line("u2") + bad + line("u3") + line("u4")

    rows = rows_of(data.encode())

    assert [row.values.get("globalUserId") for row in rows] == ["u1", "u2", "bad1", "u3", "u4"]
    assert rows[2].reasons == ["row: longer than 64 KiB"]
    field_lines = smuggled_field(190_000, 115).count("\n")
    assert [row.line for row in rows] == [2, 3, 4, 5 + field_lines, 6 + field_lines]
    assert len(rows[2].raw) <= MAX_ROW_BYTES


@pytest.mark.parametrize("split", [1, 2, 3, 7])
def test_an_escaped_quote_split_across_reads_keeps_the_row_whole(split: int) -> None:
    # Quoted text full of "" pairs, on one line longer than one read: the reads end between
    # the two quotes of a pair somewhere; the row still ends at its real end.
    field = '"' + ('a""' * split + "b" * 5) * (MAX_ROW_BYTES // 6) + '"'
    data = HEADER + f"u1,u1000,c1,{field},0.5,true\n" + line("u2")

    rows = rows_of(data.encode())

    assert [row.values.get("globalUserId") for row in rows] == ["u1", "u2"]
    assert rows[0].reasons == ["row: longer than 64 KiB"]
    assert rows[1].reasons == []


def test_a_malformed_row_with_an_open_quote_does_not_leak_the_lines_it_quotes() -> None:
    # csv gives up at the x after "b"; the rest of the line opens a quote it would never see.
    bad = 'u1,u1000,c1,"b"x,"\n' + line("smuggled1") + line("smuggled2") + '",0.5,true\n'
    data = HEADER + bad + line("u2")

    rows = rows_of(data.encode())

    assert [row.line for row in rows] == [2, 6]
    assert any("malformed CSV" in reason for reason in rows[0].reasons)
    assert rows[1].values["globalUserId"] == "u2" and rows[1].reasons == []


def test_an_overlong_unquoted_row_ends_at_its_line_break() -> None:
    data = HEADER + f'u1,u1000,c1,{"q" * (MAX_ROW_BYTES * 3)}"x,0.5,true\n' + line("u2")

    rows = rows_of(data.encode())

    assert [(row.line, row.values.get("globalUserId")) for row in rows] == [(2, "u1"), (3, "u2")]
