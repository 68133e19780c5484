"""A streaming CSV scanner: constant memory, exact line numbers, ~C speed on plain lines.

Why not `csv.reader` over a text stream: it decodes every byte to str and builds every field,
~50-100 MB/s. This scanner works on large binary blocks instead:

- a block is cut at its last newline (the tail is carried into the next block),
- a block without any quote character takes the fast path: `split(b"\\n")` and one
  `bytes.count(delimiter)` per line, all in C; only mismatching lines are looked at in Python,
- lines with quotes are grouped into records by quote parity (RFC 4180: a newline is inside a
  quoted field iff an odd number of quotes precede it in the record; an escaped `""` adds two),
  and delimiters are counted only outside quotes,
- encoding is detected by the EncodingSniffer the validate plugin uses too (same bytes, same
  answer), and checked per block with one decode (ASCII blocks skip it), falling back to
  per-line decoding only for blocks that contain bad bytes, to get line numbers.

Every malformed row goes to `on_error` (line, kind, message, the raw row: the caller keeps
what it needs of it) as it is found; only the first `max_errors` are also kept in the summary.

Records longer than `max_record` bytes (e.g. a 3 GB file with no newline, or a quote that is
never closed) are reported and skipped without being buffered. Field values are only built for
a sample of records (type inference) or when `on_record` is set (tests, exports).

Semantics follow Python's csv module (excel dialect, `doublequote=True`) for well-formed input;
blank lines are not records. Quotes that RFC 4180 does not allow (inside an unquoted field, or
text after a closing quote) are reported as `stray quote` errors.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from tusserver.processing.encoding import BOM, EncodingSniffer

SNIFF_BYTES = 64 * 1024
SUB_BLOCK = 128 * 1024  # retry size for blocks that fail the whole-block fast path
CANDIDATE_DELIMITERS = (b",", b";", b"\t", b"|")
SAMPLE_HEAD = 2000  # records fully sampled at the start for type inference
SAMPLE_PER_BLOCK = 16  # then this many records from each block

_QUOTED = re.compile(rb'"[^"]*(?:""[^"]*)*"')
_INT = re.compile(rb"[+-]?\d+")
_FLOAT = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)", re.I)
_DATE = re.compile(
    rb"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    rb"|\d{1,2}/\d{1,2}/\d{4}"
)


class CsvFailed(Exception):
    """The input is not a CSV we can process at all (empty, binary, no header line).

    The message has no line number; `line` carries it (printed once by the caller)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class CsvOptions:
    """What the scanner is told; `None` means detect it from the first bytes."""

    delimiter: bytes | None = None
    header: bool | None = None
    encoding: str = "auto"  # auto | utf-8 | latin-1
    max_record: int = 16 * 1024 * 1024
    max_errors: int = 100
    infer_types: bool = True


@dataclass
class _Column:
    empty: int = 0
    ints: int = 0
    floats: int = 0
    dates: int = 0
    texts: int = 0

    def add(self, value: bytes) -> None:
        value = value.strip()
        if not value:
            self.empty += 1
        elif _INT.fullmatch(value):
            self.ints += 1
        elif _FLOAT.fullmatch(value):
            self.floats += 1
        elif _DATE.fullmatch(value):
            self.dates += 1
        else:
            self.texts += 1

    def summary(self, name: str) -> dict[str, Any]:
        seen = self.empty + self.ints + self.floats + self.dates + self.texts
        filled = seen - self.empty
        if filled == 0:
            kind = "empty"
        elif self.ints == filled:
            kind = "int"
        elif self.ints + self.floats == filled:
            kind = "float"
        elif self.dates == filled:
            kind = "date"
        else:
            kind = "text"
        return {
            "name": name,
            "type": kind,
            "empty_share": round(self.empty / seen, 4) if seen else 0.0,
            "sampled": seen,
            "counts": {
                "int": self.ints,
                "float": self.floats,
                "date": self.dates,
                "text": self.texts,
                "empty": self.empty,
            },
        }


@dataclass
class _Group:
    """A record spanning lines (a quoted field holds newlines), kept until its quote closes."""

    start: int
    lines: list[bytes] = field(default_factory=list)
    size: int = 0


class CsvScanner:
    """Push-style scanner: feed(chunk) any number of times, then finish() -> summary dict."""

    def __init__(
        self,
        options: CsvOptions | None = None,
        on_record: Callable[[int, list[str]], None] | None = None,
        on_error: Callable[[int, str, str, bytes], None] | None = None,
    ):
        self.opt = options or CsvOptions()
        self.on_record = on_record
        self.on_error = on_error
        self.records = 0  # non-blank records, header included
        self.errors: list[dict[str, Any]] = []
        self.errors_total = 0
        self.error_kinds: dict[str, int] = {}
        self.encoding = "utf-8" if self.opt.encoding == "auto" else self.opt.encoding
        self.delimiter = self.opt.delimiter or b","
        self.header: list[str] | None = None
        self.ncols = 0
        self.quoted_seen = False
        self._head = bytearray()  # bytes buffered before the dialect is known
        self._sniffer = EncodingSniffer() if self.opt.encoding == "auto" else None
        self._held = bytearray()  # input held while the sniffer decides (bounded by WINDOW)
        self._strip_bom = False
        self._detected = False
        self._carry = b""
        self._line = 1  # line number of the first byte not yet processed
        self._skipping: int | None = None  # start line of an oversized line being skipped
        self._group: _Group | None = None
        self._columns: list[_Column] = []
        self._sampled = 0

    # -- public ----------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Scan the next piece of the file."""
        if not chunk:
            return
        sniffer = self._sniffer
        if sniffer is not None and sniffer.encoding is None:
            # Bytes after the first non-ASCII one wait until the encoding is known (at most
            # a window's worth past this chunk); ASCII-only input passes straight through.
            sniffer.update(chunk)
            if self._held or sniffer.waiting:
                self._held += chunk
                if sniffer.waiting:
                    return
                chunk, self._held = bytes(self._held), bytearray()
            if sniffer.encoding is not None:
                self.encoding = sniffer.encoding
        self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        if not self._detected:
            self._head += chunk
            if len(self._head) < SNIFF_BYTES:
                return
            if b"\n" not in self._head and len(self._head) <= self.opt.max_record:
                return  # the first line is still incomplete: keep looking for the header
            head, self._head = bytes(self._head), bytearray()
            self._detect(head)
            self._scan(head)
            return
        self._scan(chunk)

    def finish(self) -> dict[str, Any]:
        """End of file: flush the last line, report unclosed quotes, return the summary."""
        if self._sniffer is not None:
            self.encoding = self._sniffer.finish()
            if self._held:
                held, self._held = bytes(self._held), bytearray()
                self._feed(held)
        if not self._detected:
            head, self._head = bytes(self._head), bytearray()
            self._detect(head)
            self._scan(head)
        if self._skipping is not None:
            self._line += 1  # the oversized last line, already reported
        elif self._carry:
            self._scan(b"\n")
        if self._group is not None:
            group, self._group = self._group, None
            self._error(
                group.start, "unclosed quote", "quoted field is never closed", group.lines[0]
            )
        data_records = self.records - (1 if self.header is not None else 0)
        result: dict[str, Any] = {
            "encoding": self.encoding,
            "delimiter": self.delimiter.decode(),
            "quotechar": '"',
            "quoting": "minimal" if self.quoted_seen else "none",
            "has_header": self.header is not None,
            "headers": self.header,
            "columns": self.ncols,
            "records": max(data_records, 0),
            "lines": self._line - 1,
            "errors_total": self.errors_total,
            "error_kinds": dict(self.error_kinds),
            "errors": self.errors,
        }
        if self.opt.infer_types:
            names = self.header or [f"column_{i + 1}" for i in range(self.ncols)]
            result["column_summary"] = [
                col.summary(names[i] if i < len(names) else f"column_{i + 1}")
                for i, col in enumerate(self._columns)
            ]
            result["sampled_records"] = self._sampled
        return result

    # -- detection -------------------------------------------------------------------------

    def _detect(self, head: bytes) -> None:
        """Encoding, delimiter and header row from the first bytes."""
        self._detected = True
        if head.startswith(BOM):
            head = head[len(BOM) :]
            self.encoding = "utf-8-sig"  # what the sniffer says too (auto mode)
            self._strip_bom = True  # dropped by the first _scan
        if not head.strip():
            raise CsvFailed("empty file: no header and no records")
        nul = head.find(b"\0")
        if nul >= 0:
            line = head.count(b"\n", 0, nul) + 1
            raise CsvFailed("binary data, not CSV text (NUL byte)", line=line)
        last_nl = head.rfind(b"\n", 0, SNIFF_BYTES)
        if last_nl < 0:
            last_nl = head.find(b"\n")
        if last_nl < 0 and len(head) > self.opt.max_record:
            raise CsvFailed(
                f"longer than the {self.opt.max_record} byte record limit; no header row found",
                line=1,
            )
        sample = head[: last_nl + 1] if last_nl >= 0 else head
        text = sample.decode("utf-8" if self.encoding != "latin-1" else "latin-1", "replace")
        if self.opt.delimiter is None:
            self.delimiter = _pick_delimiter(text)
        rows = _sample_rows(text, self.delimiter)
        if not rows:
            raise CsvFailed("no records found")
        first = rows[0]
        self.ncols = len(first)
        header = self.opt.header if self.opt.header is not None else _looks_like_header(rows)
        if header:
            self.header = first
        if self.opt.infer_types:
            self._columns = [_Column() for _ in range(self.ncols)]
        self._prepare_fast_path()

    def _prepare_fast_path(self) -> None:
        """Patterns for _fast_block, built once the delimiter is known."""
        self._field_ends = (self.delimiter, b"\n")  # what precedes an opening quote
        self._field_starts = (self.delimiter, b"\n", b"\r\n")  # what follows a closing one
        keep = {self.delimiter[0], ord("\n")}
        self._not_structural = bytes(b for b in range(256) if b not in keep)
        self._unit = self.delimiter * (self.ncols - 1) + b"\n"
        self._delim_str = self.delimiter.decode("latin-1")

    # -- scanning --------------------------------------------------------------------------

    def _scan(self, chunk: bytes) -> None:
        if self._strip_bom:
            self._strip_bom = False
            chunk = chunk[len(BOM) :]
        if self._skipping is not None:
            nl = chunk.find(b"\n")
            if nl < 0:
                return
            self._line += 1
            self._skipping = None
            chunk = chunk[nl + 1 :]
        cut = chunk.rfind(b"\n") + 1  # one copy at most: carry + whole lines of the chunk
        if cut == 0:
            complete, self._carry = b"", self._carry + chunk
        else:
            head = chunk if cut == len(chunk) else chunk[:cut]
            complete, self._carry = (self._carry + head if self._carry else head), chunk[cut:]
        if complete:
            budget = self._sample_budget() if self._sampled < SAMPLE_HEAD else 0
            if budget and self.on_record is None and len(complete) > SUB_BLOCK:
                # only the sampled head needs per-record work; the rest can take the fast path
                rest = complete.split(b"\n", budget)[-1]
                if rest:
                    self._lines(complete[: len(complete) - len(rest)], budget)
                    self._sampled = max(self._sampled, SAMPLE_HEAD)  # even if rows were ragged
                    complete = rest
            self._lines(complete)
        if len(self._carry) > self.opt.max_record:
            self._error(
                self._line,
                "record too long",
                f"line longer than {self.opt.max_record} bytes; skipped",
                self._carry,
            )
            self._carry = b""
            self._skipping = self._line

    def _lines(self, complete: bytes, nlines: int | None = None) -> None:
        """Scan complete lines (a block cut after a newline, starting at a record)."""
        done = self._fast_block(complete, nlines)
        if done >= 0:
            self._line += done
            return
        if len(complete) > 2 * SUB_BLOCK and self._group is None and self.on_record is None:
            # A few bad lines should not send 4 MiB down the per-line path: retry in pieces,
            # in order. A piece ending inside a quoted field is never accepted by the fast
            # path (a quote stays unmatched), so the per-line path then carries the field on.
            start = 0
            while start < len(complete):
                end = complete.find(b"\n", start + SUB_BLOCK) + 1 or len(complete)
                piece = complete[start:end]
                done = self._fast_block(piece, None)
                if done >= 0:
                    self._line += done
                else:
                    self._slow_lines(piece, piece.count(b"\n"))
                start = end
            return
        self._slow_lines(complete, complete.count(b"\n") if nlines is None else nlines)

    def _slow_lines(self, complete: bytes, nlines: int) -> None:
        """The per-line path: exact errors and line numbers, fields when sampling."""
        first = self._line
        lines = complete.split(b"\n")
        lines.pop()
        if len(complete) > self.opt.max_record and max(map(len, lines)) > self.opt.max_record:
            self._drop_long_lines(lines, first)
        self._check_bytes(complete, lines, first)
        if self._group is None and b'"' not in complete:
            self._plain_block(lines, first)
        else:
            self._quoted_block(lines, first)
        self._line += nlines

    def _fast_block(self, block: bytes, nlines: int | None) -> int:
        """Whole-block check in C: if every line is a good record, count (and sample) them and
        return the number of lines; else -1.

        Valid quoted fields are cut out with one regex pass; what is left must be exactly
        `ncols - 1` delimiters per newline once every other byte is deleted. Anything else
        (errors, blank lines, stray quotes, a quoted field open at the block end, a sample
        still being collected) returns -1 and the per-line path takes over.
        """
        if self._group is not None or self.on_record is not None:
            return -1
        if self._sampled < SAMPLE_HEAD and self._columns:
            return -1
        if len(block) > self.opt.max_record or b"\0" in block:
            return -1
        if not block.isascii() and self.encoding != "latin-1":
            try:
                str(block, "utf-8")
            except UnicodeDecodeError:
                return -1
        body = block
        if b'"' in block:
            # Leftmost-first matching from a record boundary finds exactly the quoted fields
            # of well-formed CSV. Every text between them must end where a field starts and
            # start where a field ends, and no quote may be left over; else it is malformed.
            pieces = _QUOTED.split(block)
            last = len(pieces) - 1
            ends, starts = self._field_ends, self._field_starts
            if last == 0 or (pieces[0] and not pieces[0].endswith(ends)):
                return -1
            inner = pieces[1:]
            if not all(map(bytes.startswith, inner, repeat(starts))):
                return -1
            inner.pop()
            if not all(map(bytes.endswith, inner, repeat(ends))):
                return -1
            body = b"".join(pieces)
            if b'"' in body:
                return -1
            self.quoted_seen = True
        if self.ncols == 1 and (b"\n\n" in block or b"\n\r\n" in block or block[:1] in b"\r\n"):
            return -1  # a blank line would pass for a one-column record
        skeleton = body.translate(None, self._not_structural)  # only delimiters and newlines
        records = skeleton.count(b"\n")
        if skeleton != self._unit * records:
            return -1
        self.records += records
        if self._columns:
            self._sample_fast(block)
        if body is block:
            return records
        return nlines if nlines is not None else block.count(b"\n")

    def _sample_fast(self, block: bytes) -> None:
        """A few records from the top of the block for type inference."""
        head = block.split(b"\n", SAMPLE_PER_BLOCK)[:SAMPLE_PER_BLOCK]
        codec = "latin-1"
        text = b"\n".join(head).decode(codec)
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=self._delim_str))
        except csv.Error:
            return
        for row in rows:
            self._emit(2, 0, [v.encode(codec) for v in row])

    def _drop_long_lines(self, lines: list[bytes], first: int) -> None:
        """Complete lines over the record limit are reported and scanned as blank lines."""
        for i, line in enumerate(lines):
            if len(line) > self.opt.max_record and self._group is None:
                self._error(
                    first + i,
                    "record too long",
                    f"line longer than {self.opt.max_record} bytes; skipped",
                    line,
                )
                lines[i] = b""

    def _check_bytes(self, data: bytes, lines: list[bytes], first: int) -> None:
        """Encoding and NUL checks on the complete lines of a block (carry excluded)."""
        if data.isascii():
            if b"\0" in data:
                self._nul_lines(lines, first)
            return
        if b"\0" in data:
            self._nul_lines(lines, first)
        if self.encoding == "latin-1":
            return
        try:
            str(data, "utf-8")
        except UnicodeDecodeError:
            for i, line in enumerate(lines):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._error(
                        first + i,
                        "bad encoding",
                        f"invalid UTF-8 byte 0x{line[exc.start]:02x} at column {exc.start + 1}",
                        line,
                    )

    def _nul_lines(self, lines: list[bytes], first: int) -> None:
        for i, line in enumerate(lines):
            if b"\0" in line:
                self._error(first + i, "nul byte", "NUL byte in text", line)

    def _plain_block(self, lines: list[bytes], first: int) -> None:
        """No quotes anywhere: every non-blank line is one record."""
        d = self.delimiter
        n = len(lines)
        blanks = lines.count(b"") + lines.count(b"\r")
        counts = list(map(bytes.count, lines, repeat(d, n)))
        expected = self.ncols - 1
        if counts.count(expected) + (blanks if expected else 0) != n:
            for i, c in enumerate(counts):
                if c != expected and lines[i] not in (b"", b"\r"):
                    self._wrong_columns(first + i, c + 1, lines[i])
        before = self.records
        self.records += n - blanks
        if self.on_record is not None or self._sample_budget() > 0:
            self._sample_plain(lines, first, before)

    def _sample_plain(self, lines: list[bytes], first: int, before: int) -> None:
        take = len(lines) if self.on_record is not None else self._sample_budget()
        index = before
        for i, line in enumerate(lines):
            if take <= 0:
                break
            if line in (b"", b"\r"):
                continue
            index += 1
            take -= 1
            values = line.removesuffix(b"\r").split(self.delimiter)
            self._emit(index, first + i, values)

    def _quoted_block(self, lines: list[bytes], first: int) -> None:
        """Lines may contain quotes: walk them as csv does to find records spanning lines."""
        budget = len(lines) if self.on_record is not None else self._sample_budget()
        for i, line in enumerate(lines):
            group = self._group
            if group is not None:
                group.lines.append(line)
                group.size += len(line) + 1
                if b'"' in line and not _quote_scan(line, self.delimiter, True)[0]:
                    self._group = None
                    budget = self._record(b"\n".join(group.lines), group.start, budget)
                elif group.size > self.opt.max_record:
                    self._group = None
                    self._error(
                        group.start,
                        "record too long",
                        f"record longer than {self.opt.max_record} bytes"
                        " (unclosed quote?); skipped",
                        group.lines[0],
                    )
                continue
            if line in (b"", b"\r"):
                continue
            if b'"' in line and _quote_scan(line, self.delimiter, False)[0]:
                self._group = _Group(first + i, [line], len(line) + 1)
            else:
                budget = self._record(line, first + i, budget)

    def _record(self, record: bytes, line: int, budget: int) -> int:
        """One complete record from the quoted path; returns the remaining sample budget."""
        self.records += 1
        index = self.records
        d = self.delimiter
        if b'"' not in record:
            count = record.count(d) + 1
        else:
            self.quoted_seen = True
            _, delimiters, stray = _quote_scan(record.removesuffix(b"\r"), d, False)
            count = delimiters + 1
            if stray:
                self._error(line, "stray quote", "quote inside an unquoted field", record)
        if count != self.ncols:
            self._wrong_columns(line, count, record)
        if budget > 0:
            budget -= 1
            values = _split_record(record, d, self.encoding)
            self._emit(index, line, values)
        return budget

    # -- bookkeeping -----------------------------------------------------------------------

    def _sample_budget(self) -> int:
        if not self._columns:
            return 0
        if self._sampled < SAMPLE_HEAD:
            return SAMPLE_HEAD - self._sampled + (1 if self.header is not None else 0)
        return SAMPLE_PER_BLOCK

    def _emit(self, index: int, line: int, values: list[bytes]) -> None:
        """A record with its fields: to the type sampler (data rows) and to `on_record`."""
        if self.on_record is not None:
            codec = "latin-1" if self.encoding == "latin-1" else "utf-8"
            self.on_record(line, [v.decode(codec, "replace") for v in values])
        if index == 1 and self.header is not None:
            return
        if self._columns and len(values) == self.ncols:
            self._sampled += 1
            for col, value in zip(self._columns, values, strict=True):
                col.add(value)

    def _wrong_columns(self, line: int, got: int, raw: bytes) -> None:
        message = f"expected {self.ncols} fields, got {got}"
        self._error(line, "wrong column count", message, raw)

    def _error(self, line: int, kind: str, message: str, raw: bytes = b"") -> None:
        """Count every error, keep the first max_errors, hand each one to on_error."""
        self.errors_total += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if len(self.errors) < self.opt.max_errors:
            self.errors.append({"line": line, "kind": kind, "message": message})
        if self.on_error is not None:
            self.on_error(line, kind, message, raw)


def _split_record(record: bytes, delimiter: bytes, encoding: str) -> list[bytes]:
    """Field values of one record (quotes removed), as bytes."""
    record = record.removesuffix(b"\r")
    if b'"' not in record:
        return record.split(delimiter)
    text = record.decode("latin-1")  # lossless byte <-> char mapping
    try:
        rows = list(csv.reader([text], delimiter=delimiter.decode("latin-1")))
    except csv.Error:
        return record.split(delimiter)
    return [v.encode("latin-1") for v in rows[0]] if rows else [b""]


def _quote_scan(data: bytes, delimiter: bytes, in_quote: bool) -> tuple[bool, int, bool]:
    """Walk the quotes of `data` like csv.reader: (inside a quote at the end, delimiters
    outside quotes, stray quote seen). A quote opens a field only at the field's start; `""`
    inside a quoted field is an escaped quote; other quotes are literal but reported."""
    d = delimiter[0]
    count = 0
    stray = False
    start = 0
    n = len(data)
    pos = data.find(b'"')
    while pos >= 0:
        if in_quote:
            if pos + 1 < n and data[pos + 1] == 0x22:
                pos = data.find(b'"', pos + 2)
                continue
            in_quote = False
            if pos + 1 < n and data[pos + 1] not in (d, 0x0D, 0x0A):
                stray = True
            start = pos + 1
        elif pos == 0 or data[pos - 1] in (d, 0x0A):
            count += data.count(delimiter, start, pos)
            in_quote = True
        else:
            stray = True
        pos = data.find(b'"', pos + 1)
    if not in_quote:
        count += data.count(delimiter, start)
    return in_quote, count, stray


def _sample_rows(text: str, delimiter: bytes | None) -> list[list[str]]:
    """Non-blank records of the detection sample, parsed by the csv module."""
    delim = (delimiter or b",").decode("latin-1")
    try:
        return [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delim) if row]
    except csv.Error:
        return [line.split(delim) for line in text.splitlines() if line]


def _pick_delimiter(text: str) -> bytes:
    """The candidate that splits the sample's rows into the most consistent field count > 1."""
    best: tuple[float, int, int] = (0.0, 0, 0)
    choice = b","
    for rank, cand in enumerate(CANDIDATE_DELIMITERS):
        rows = _sample_rows(text, cand)[:200]
        if not rows:
            continue
        counts: dict[int, int] = {}
        for row in rows:
            counts[len(row)] = counts.get(len(row), 0) + 1
        width, freq = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if width < 2:
            continue
        score = (freq / len(rows), width, -rank)
        if score > best:
            best, choice = score, cand
    return choice


def _looks_like_header(rows: list[list[str]]) -> bool:
    """A first row of distinct, non-empty, non-numeric names is a header (the usual export)."""
    first = rows[0]
    if any(not v.strip() for v in first) or len(set(first)) != len(first):
        return False
    for value in first:
        raw = value.strip().encode("utf-8", "replace")
        if _INT.fullmatch(raw) or _FLOAT.fullmatch(raw) or _DATE.fullmatch(raw):
            return False
    return True
