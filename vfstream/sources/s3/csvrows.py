"""Streaming CSV reading for scoring files: physical lines, raw text and row-level faults.

Pure: it reads a text stream and yields rows; nothing here talks to S3 or Kafka.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from vfstream.domain.records import CSV_COLUMNS, MAX_ROW_BYTES, check_header
from vfstream.errors import FileRejected, InputRejected

# The tap below ends every row at MAX_ROW_BYTES characters, so the csv module's own field
# limit is never reached: when it was (a 190 KB quoted field), csv raised, restarted inside
# the field and ingested the lines quoted in it as rows.
csv.field_size_limit(MAX_ROW_BYTES * 2)


@dataclass(slots=True)
class CsvRow:
    """One row: its first line's number, its raw text, its fields and row-level faults.

    ``fields`` are in the header's order; ``kept`` pairs each wanted column with its index.
    """

    line: int
    raw: str
    fields: list[str]
    kept: list[tuple[str, int]]
    reasons: list[str] = field(default_factory=list)

    @property
    def values(self) -> dict[str, str]:
        """The wanted columns present in this row, by name."""
        fields, count = self.fields, len(self.fields)
        return {column: fields[index] for column, index in self.kept if index < count}


class _OverlongLine(InputRejected):
    """Raised through csv.reader to end the current row once it is too long.

    The tap has already skipped to the row's real end (see ``QuoteScanner``), so the next
    row csv reads starts at a true row boundary.
    """


# Where csv's reader stands in a row (its own state names, for the states that matter).
START_FIELD, IN_FIELD, IN_QUOTED_FIELD, QUOTE_IN_QUOTED_FIELD, ROW_ENDED = range(5)
_QUOTED_BODY = re.compile(r'[^"]*(?:""[^"]*)*')  # up to a lone quote, or the end
_UNQUOTED_STOP = re.compile(r"[,\r\n]")


class QuoteScanner:
    """Follows a row's text as csv (RFC 4180 quoting, ``,`` and ``"``) would read it, to find
    where the row really ends: at a line break outside quotes.

    Chunks may end anywhere, even between the two quotes of an escaped ``""``. C-speed regex
    searches do the scanning, so skipping a huge field costs little per byte.
    """

    def __init__(self) -> None:
        self.state = START_FIELD

    def feed(self, text: str) -> int | None:
        """Scan the next chunk of the row; the index just after the row's end, or None."""
        i, n, state = 0, len(text), self.state
        while i < n:
            if state == QUOTE_IN_QUOTED_FIELD:
                if text[i] == '"':  # the second quote of an escaped ""
                    state, i = IN_QUOTED_FIELD, i + 1
                    continue
                state = IN_FIELD  # the field's closing quote
            if state == IN_QUOTED_FIELD:
                i = _QUOTED_BODY.match(text, i).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                state, i = QUOTE_IN_QUOTED_FIELD, i + 1
                continue
            if state == START_FIELD and text[i] == '"':
                state, i = IN_QUOTED_FIELD, i + 1
                continue
            stop = _UNQUOTED_STOP.search(text, i)
            if stop is None:
                state = IN_FIELD
                break
            i = stop.end()
            if stop.group() == ",":
                state = START_FIELD
                continue
            self.state = ROW_ENDED
            if stop.group() == "\r" and i < n and text[i] == "\n":
                i += 1
            return i
        self.state = state
        return None

    @property
    def in_quotes(self) -> bool:
        return self.state in (IN_QUOTED_FIELD, QUOTE_IN_QUOTED_FIELD)


class _LineTap:
    """Feeds lines to csv.reader while remembering them, so each row keeps its raw text.

    Lines are read with a bound, and a row is ended (``_OverlongLine``) once its lines pass
    MAX_ROW_BYTES characters: nothing holds more than one row's worth of text, however long
    a line or a quoted field is. The rest of an overlong row, or of a row csv found
    malformed, is skipped up to its real end (``resync``).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lines_read = 0
        self.pending: list[str] = []
        self._pending_chars = 0
        self.overlong = False

    def __iter__(self) -> _LineTap:
        return self

    def _readline(self) -> str:
        line = self._stream.readline(MAX_ROW_BYTES + 1)
        if line[-1:] in ("\n", "\r"):
            self.lines_read += 1
        return line

    def __next__(self) -> str:
        line = self._readline()
        if not line:
            raise StopIteration
        if self._pending_chars + len(line) > MAX_ROW_BYTES:
            self.overlong = True
            row_so_far = [*self.pending, line]
            self.pending.append(line[: MAX_ROW_BYTES - self._pending_chars])
            self._pending_chars = MAX_ROW_BYTES
            self._skip_to_row_end(row_so_far)
            raise _OverlongLine
        self.pending.append(line)
        self._pending_chars += len(line)
        return line

    def resync(self) -> None:
        """After csv gave up on a row mid-way: skip what is left of it, up to its real end."""
        self._skip_to_row_end(self.pending)

    def _skip_to_row_end(self, row_so_far: list[str]) -> None:
        scanner = QuoteScanner()
        for text in row_so_far:
            if scanner.feed(text) is not None:
                return
        while chunk := self._readline():
            if scanner.feed(chunk) is not None:
                return

    def take(self) -> tuple[str, bool]:
        raw = "".join(self.pending)
        overlong = self.overlong
        self.pending.clear()
        self._pending_chars = 0
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
    invalid UTF-8 and quoted line breaks reach us intact. Raises FileRejected for a
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
    overlong header raise FileRejected.
    """
    tap = _LineTap(stream)
    reader = csv.reader(tap, strict=True)
    header: list[str] | None = None
    while header is None:
        try:
            first = next(reader)
        except StopIteration:
            raise FileRejected("the file is empty: it has no header row") from None
        except csv.Error as exc:
            raise FileRejected(f"the header row is not valid CSV: {exc}") from exc
        except _OverlongLine:
            raise FileRejected(
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
            tap.resync()
            raw, overlong = tap.take()
            reasons = [*_row_faults(raw, overlong, 0, 0), f"row: malformed CSV ({exc})"]
            yield CsvRow(start_line, raw, [], kept, reasons)
            continue
        else:
            raw, overlong = tap.take()
        if not fields:
            continue
        n_fields = len(fields)
        if overlong or n_fields > n_header or not raw.isascii() or len(raw) > MAX_ROW_BYTES // 4:
            reasons = _row_faults(raw, overlong, n_fields, n_header)
        else:
            reasons = []  # the common row: nothing to check
        yield CsvRow(start_line, raw, fields, kept, reasons)
