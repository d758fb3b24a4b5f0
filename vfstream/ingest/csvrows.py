"""Streaming CSV reading for scoring files: physical lines, raw text and row-level faults.

Pure: it reads a text stream and yields rows; nothing here talks to S3 or Kafka.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from vfstream.domain.records import CSV_COLUMNS, MAX_ROW_BYTES, ScoringFileError, check_header

# A single field may not exceed the row limit; the csv module enforces it for us, and a
# generous margin keeps the error ours ("row longer than 64 KiB") rather than csv's.
csv.field_size_limit(MAX_ROW_BYTES * 2)


@dataclass(slots=True)
class CsvRow:
    line: int
    raw: str
    values: dict[str, str]
    reasons: list[str] = field(default_factory=list)


class _OverlongLine(Exception):
    """Raised through csv.reader to end the current row at an overlong line.

    Handing csv a truncated line instead would leave it inside a quoted field when the
    closing quote was cut off, and it would swallow the rows that follow.
    """


class _LineTap:
    """Feeds lines to csv.reader while remembering them, so each row keeps its raw text.

    Lines are read with a bound so one endless line cannot exhaust memory: the rest of an
    overlong line is skipped, the row ends there (``_OverlongLine``) and is flagged.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lines_read = 0
        self.pending: list[str] = []
        self.overlong = False

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = self._stream.readline(MAX_ROW_BYTES + 1)
        if not line:
            raise StopIteration
        self.lines_read += 1
        if len(line) > MAX_ROW_BYTES and not line.endswith("\n"):
            self.overlong = True
            while True:
                rest = self._stream.readline(MAX_ROW_BYTES + 1)
                if not rest or rest.endswith("\n"):
                    break
            self.pending.append(line[:MAX_ROW_BYTES] + "\n")
            raise _OverlongLine
        self.pending.append(line)
        return line

    def take(self) -> tuple[str, bool]:
        raw = "".join(self.pending)
        overlong = self.overlong
        self.pending.clear()
        self.overlong = False
        return raw, overlong


def printable_raw(raw: str) -> str:
    """Raw row text for dead letters: invalid UTF-8 bytes shown as \\xNN escapes."""
    text = raw.rstrip("\r\n")
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _salvage_fields(raw: str) -> list[str]:
    """Best-effort fields of a cut-off row, so its dead letter can still say what it held."""
    try:
        return next(csv.reader(io.StringIO(raw, newline="")), [])
    except csv.Error:
        return []


def _row_faults(raw: str, overlong: bool, n_fields: int, n_header: int) -> list[str]:
    reasons: list[str] = []
    too_long = len(raw) > MAX_ROW_BYTES // 4 and (
        len(raw.encode("utf-8", "surrogateescape")) > MAX_ROW_BYTES
    )
    if overlong or too_long:
        reasons.append(f"row: longer than {MAX_ROW_BYTES // 1024} KiB")
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            reasons.append("row: bytes are not valid UTF-8")
    if n_fields > n_header:
        reasons.append(f"row: {n_fields} fields but the header has {n_header}")
    return reasons


def read_scoring_rows(stream: TextIO) -> Iterator[CsvRow]:
    """Yield every data row of a scoring file.

    ``stream`` must be decoded with ``errors="surrogateescape"`` and ``newline=""`` so that
    invalid UTF-8 and quoted line breaks reach us intact. Raises ScoringFileError for a
    missing or incomplete header.
    """
    return read_csv_rows(stream, columns=CSV_COLUMNS, check_header=check_header)


def read_csv_rows(
    stream: TextIO,
    *,
    columns: Collection[str],
    check_header: Callable[[list[str]], None],
) -> Iterator[CsvRow]:
    """Yield every data row of a CSV file, keeping only ``columns`` in each row's values.

    Shared by scoring and fanlist files, which differ only in their columns and header rules.
    ``check_header`` raises the file type's own error; an empty file, an unreadable or an
    overlong header raise ScoringFileError.
    """
    tap = _LineTap(stream)
    reader = csv.reader(tap, strict=True)
    header: list[str] | None = None
    while header is None:
        try:
            first = next(reader)
        except StopIteration:
            raise ScoringFileError("the file is empty: it has no header row") from None
        except csv.Error as exc:
            raise ScoringFileError(f"the header row is not valid CSV: {exc}") from exc
        except _OverlongLine:
            raise ScoringFileError(
                f"the header row is longer than {MAX_ROW_BYTES // 1024} KiB"
            ) from None
        tap.take()
        if first:
            header = [column.strip().lstrip("\ufeff") for column in first]
    check_header(header)
    n_header = len(header)
    kept = [(column, index) for index, column in enumerate(header) if column in columns]
    while True:
        start_line = tap.lines_read + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _OverlongLine:
            raw, overlong = tap.take()
            fields = _salvage_fields(raw)
        except csv.Error as exc:
            raw, overlong = tap.take()
            reasons = [*_row_faults(raw, overlong, 0, 0), f"row: malformed CSV ({exc})"]
            yield CsvRow(start_line, raw, {}, reasons)
            continue
        else:
            raw, overlong = tap.take()
        if not fields:
            continue
        n_fields = len(fields)
        reasons = _row_faults(raw, overlong, n_fields, n_header)
        values = {column: fields[index] for column, index in kept if index < n_fields}
        yield CsvRow(start_line, raw, values, reasons)
