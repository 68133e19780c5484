"""The streaming CSV scanner against Python's csv module as the oracle.

Each input is fed in several chunk sizes (1 byte up to whole), so block boundaries fall inside
quoted fields, CRLF pairs and multi-byte characters. Records are compared field by field
(`on_record`), and record counts also on the fast path (no `on_record`, large blocks).
"""

from __future__ import annotations

import csv
import io
import os
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tusserver.processing.csvscan import CsvFailed, CsvOptions, CsvScanner

CHUNKS = (1, 2, 3, 7, 64, 1 << 20)


def scan(data: bytes, chunk: int, collect: bool = True, **options: object):
    """Feed `data` in `chunk`-sized pieces; (records with fields, summary)."""
    records: list[list[str]] = []
    scanner = CsvScanner(
        CsvOptions(**options),  # type: ignore[arg-type]
        on_record=(lambda line, values: records.append(values)) if collect else None,
    )
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    return records, scanner.finish()


def oracle(data: bytes, delimiter: str = ",", encoding: str = "utf-8-sig") -> list[list[str]]:
    text = data.decode(encoding)
    return [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row]


TRICKY = {
    "quoted newlines": b'id,text\n1,"line one\nline two"\n2,"a\n\nb"\n3,plain\n',
    "escaped quotes": b'id,text\n1,"he said ""hi"""\n2,""""\n3,""\n4,"a,""b"",c"\n',
    "crlf": b'id,text\r\n1,"x\r\ny"\r\n2,z\r\n3,"q"\r\n',
    "bom": b'\xef\xbb\xbfname,age\r\nzo\xc3\xab,3\r\n\xc3\xa9mile,"4"\r\n',
    "blank lines": b"a,b\n\n1,2\n\r\n3,4\n\n",
    "no final newline": b'a,b\n1,2\n3,"4\n5"',
    "unicode": 'città,naïve,日本\n1,2,3\n"é,è",ü,ß\n'.encode(),
    "empty fields": b'a,b,c\n,,\n"",,""\n1,,3\n',
    "single column": b"value\n1\n2\n\n3\n",
}


@pytest.mark.parametrize("name", sorted(TRICKY))
@pytest.mark.parametrize("chunk", CHUNKS)
def test_tricky_inputs_match_csv_module(name, chunk):
    """Fields and record counts equal csv.reader's (blank lines are not records)."""
    data = TRICKY[name]
    expected = oracle(data)
    records, summary = scan(data, chunk)
    assert records == expected
    assert summary["errors_total"] == 0, summary["errors"]
    assert summary["records"] == len(expected) - 1  # header row excluded
    assert summary["headers"] == expected[0]
    _, fast = scan(data, chunk, collect=False)
    assert fast["records"] == len(expected) - 1
    assert fast["errors_total"] == 0


def test_bom_and_encoding_reported():
    _, summary = scan(TRICKY["bom"], 3)
    assert summary["encoding"] == "utf-8-sig"
    assert summary["headers"] == ["name", "age"]


@pytest.mark.parametrize(("delimiter", "name"), [(",", ","), (";", ";"), ("\t", "\t"), ("|", "|")])
def test_delimiter_detection(delimiter, name):
    """The delimiter splitting every sample row into the same field count wins, even when
    another candidate appears inside quoted fields."""
    rows = [["id", "name", "note"]] + [[str(i), f"n{i}", "a,b;c|d"] for i in range(50)]
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL).writerows(rows)
    data = out.getvalue().encode()
    records, summary = scan(data, 5)
    assert summary["delimiter"] == name
    assert records == rows
    assert summary["columns"] == 3


def test_header_detection_numeric_first_row():
    """A first row of numbers is data, not a header."""
    data = b"1,2,3\n4,5,6\n"
    _, summary = scan(data, 4)
    assert summary["has_header"] is False
    assert summary["records"] == 2
    assert [c["name"] for c in summary["column_summary"]] == ["column_1", "column_2", "column_3"]


def test_type_inference():
    data = b"i,f,d,t,e\n" + b"".join(
        f"{n},{n / 4},2024-01-{n % 28 + 1:02d},x{n},{'' if n % 2 else 'v'}\n".encode()
        for n in range(100)
    )
    _, summary = scan(data, 1000)
    types = {c["name"]: (c["type"], c["empty_share"]) for c in summary["column_summary"]}
    assert types == {
        "i": ("int", 0.0),
        "f": ("float", 0.0),
        "d": ("date", 0.0),
        "t": ("text", 0.0),
        "e": ("text", 0.5),
    }


def _big_csv(rows: int, seed: int = 3) -> tuple[bytes, list[list[str]]]:
    """A CSV of several MB with quoted fields, embedded newlines, escaped quotes and CRLF."""
    rnd = random.Random(seed)
    table = [["id", "amount", "note", "day"]]
    for i in range(rows):
        note = rnd.choice(["plain", 'has "quotes"', "comma, inside", "multi\nline", "ünï"])
        table.append([str(i), str(rnd.randint(-9, 99999)), note, f"2024-02-{i % 28 + 1:02d}"])
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(table)
    return out.getvalue().encode(), table


@pytest.mark.parametrize("chunk", [4096, 1 << 20, 4 << 20])
def test_fast_path_matches_oracle_on_large_input(chunk):
    """Past the sampled head, whole blocks are checked in C: counts must still be exact."""
    data, table = _big_csv(120_000)
    _, summary = scan(data, chunk, collect=False)
    assert summary["records"] == len(table) - 1
    assert summary["errors_total"] == 0
    assert summary["lines"] == data.count(b"\n")


def test_errors_deep_in_large_input_have_exact_lines():
    """Ragged rows, bad bytes and a stray quote after the sample: reported with line numbers."""
    data, _ = _big_csv(60_000)
    lines = data.split(b"\r\n")
    # physical line numbers: count the newlines before each injected line
    bad = {40_000: b"1,2", 45_000: b"1,2,3,4,5", 50_000: b"7,8,\xff\xfe,2024-01-01"}
    for index, text in bad.items():
        lines[index] = text
    lines[55_000] = b'9,10,ab"c,2024-01-01'
    broken = b"\r\n".join(lines)
    prefix = lambda i: broken.count(b"\n", 0, sum(len(x) + 2 for x in lines[:i])) + 1  # noqa: E731
    for chunk in (65536, 4 << 20):
        _, summary = scan(broken, chunk, collect=False, encoding="utf-8")
        got = {(e["line"], e["kind"]) for e in summary["errors"]}
        assert got == {
            (prefix(40_000), "wrong column count"),
            (prefix(45_000), "wrong column count"),
            (prefix(50_000), "bad encoding"),
            (prefix(55_000), "stray quote"),
        }
        assert summary["errors_total"] == 4


def test_ragged_rows_and_error_cap():
    data = b"a,b,c\n" + b"".join(b"1,2\n" if i % 2 else b"1,2,3\n" for i in range(300))
    _, summary = scan(data, 1000, max_errors=10)
    assert summary["errors_total"] == 150
    assert len(summary["errors"]) == 10
    assert summary["errors"][0] == {
        "line": 3,
        "kind": "wrong column count",
        "message": "expected 3 fields, got 2",
    }


def test_on_error_gets_every_error_with_raw_row():
    """The summary keeps max_errors; on_error sees all of them, with the raw row (whole: the
    report cuts its excerpt)."""
    data = b"a,b,c\n" + b"".join(b"1,2\n" if i % 2 else b"1,2,3\n" for i in range(300))
    data += b"9," + b"z" * 1000 + b"\n"
    for chunk, collect in ((7, True), (1 << 20, False)):
        seen: list[tuple[int, str, str, bytes]] = []
        scanner = CsvScanner(
            CsvOptions(max_errors=10),
            on_record=(lambda line, values: None) if collect else None,
            on_error=lambda *error, seen=seen: seen.append(error),
        )
        for i in range(0, len(data), chunk):
            scanner.feed(data[i : i + chunk])
        summary = scanner.finish()
        assert summary["errors_total"] == len(seen) == 151
        assert seen[:150] == [
            (i, "wrong column count", "expected 3 fields, got 2", b"1,2") for i in range(3, 302, 2)
        ]
        assert seen[150][0] == 302 and seen[150][3] == b"9," + b"z" * 1000


def test_unclosed_quote_reports_start_line():
    data = b'a,b\n1,2\n3,"never closed\n4,5\n6,7\n'
    for chunk in (1, 5, 100):
        records, summary = scan(data, chunk)
        assert summary["errors"] == [
            {"line": 3, "kind": "unclosed quote", "message": "quoted field is never closed"}
        ]
        assert records == [["a", "b"], ["1", "2"]]


def test_invalid_utf8_line():
    data = "a,b\n1,é\n2,".encode() + b"\xff" + b"\n3,4\n"
    _, summary = scan(data, 3)
    assert summary["encoding"] == "utf-8"
    assert [(e["line"], e["kind"]) for e in summary["errors"]] == [(3, "bad encoding")]


def test_latin1_file_detected():
    data = "name,city\nJosé,Málaga\nZoë,Köln\n".encode("latin-1")
    records, summary = scan(data, 4)
    assert summary["encoding"] == "latin-1"
    assert summary["errors_total"] == 0
    assert records[1] == ["José", "Málaga"]


def test_long_line_is_skipped_with_line_number():
    data = b"a,b\n1,2\n" + b"x" * 5000 + b"\n3,4\n"
    for chunk in (100, 1 << 20):
        _, summary = scan(data, chunk, max_record=1000)
        assert [(e["line"], e["kind"]) for e in summary["errors"]] == [(3, "record too long")]
        assert summary["records"] == 2


def test_huge_single_line_fails_with_bounded_memory():
    """40 MiB without a newline: a clear failure on line 1, memory capped near max_record."""
    scanner = CsvScanner(CsvOptions(max_record=1 << 20))
    block = b"y" * (1 << 20)
    tracemalloc.start()
    with pytest.raises(CsvFailed) as failure:
        for _ in range(40):
            scanner.feed(block)
        scanner.finish()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert failure.value.line == 1
    assert "longer than" in failure.value.message and "line" not in failure.value.message
    assert peak < 8 << 20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"\n\n\r\n", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL byte"),
    ],
)
def test_not_csv_fails(data, message):
    with pytest.raises(CsvFailed) as failure:
        scan(data, 3)
    assert message in failure.value.message
    assert "line" not in failure.value.message  # the line is a field, printed once by callers


# No bare "\r": csv.writer leaves it unquoted with a "\n" terminator and csv.reader then
# treats it as a line end (classic Mac line endings, which the scanner does not support).
field_text = st.text(alphabet=st.sampled_from(list('ab ,;"\n\té€x')), min_size=0, max_size=12)


@settings(max_examples=int(os.environ.get("CSV_EXAMPLES", "150")), deadline=None)
@given(
    rows=st.lists(st.lists(field_text, min_size=3, max_size=3), min_size=1, max_size=30),
    crlf=st.booleans(),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_property_roundtrip_csv_writer(rows, crlf, chunk):
    """Anything csv.writer produces is read back exactly like csv.reader does."""
    rows = [["h1", "h2", "h3"], *rows]
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n" if crlf else "\n").writerows(rows)
    data = out.getvalue().encode()
    expected = oracle(data)
    records, summary = scan(data, chunk, delimiter=b",", header=True)
    assert records == expected
    assert summary["records"] == len(expected) - 1
    assert summary["errors_total"] == 0
    # without type sampling every block goes through the whole-block fast path first
    for size in (chunk, len(data) or 1):
        _, fast = scan(data, size, collect=False, delimiter=b",", header=True, infer_types=False)
        assert (fast["records"], fast["errors_total"]) == (len(expected) - 1, 0)


@settings(max_examples=int(os.environ.get("CSV_EXAMPLES", "150")), deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b",", b'"', b"\n", b"\r\n", b"\xff", b"bc"]), max_size=80),
    chunk=st.integers(min_value=1, max_value=30),
)
def test_property_fast_path_agrees_on_malformed_input(data, chunk):
    """Whatever the bytes, the whole-block fast path and the per-line path report the same."""
    body = b"h1,h2\n" + b"".join(data)
    opts = {"delimiter": b",", "header": True, "encoding": "utf-8"}
    _, slow = scan(body, chunk, collect=True, **opts)
    _, fast = scan(body, len(body), collect=False, infer_types=False, **opts)
    keys = ("records", "errors_total", "errors", "lines")
    assert {k: fast[k] for k in keys} == {k: slow[k] for k in keys}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sub_block_retry_agrees_with_per_line_path(seed):
    """Blocks with a few bad lines are retried in pieces; the result (errors, lines, counts)
    equals the per-line path's, also when a piece ends inside a multi-line quoted field."""
    data, _ = _big_csv(50_000, seed=seed)
    lines = data.split(b"\r\n")
    rnd = random.Random(seed)
    for index in rnd.sample(range(1, len(lines) - 1), 12):
        lines[index] = rnd.choice([b"1,2", b'3,"x,5,6', b'7,8,ab"c,d', b"9,10,11,12,13"])
    broken = b"\r\n".join(lines)
    opts = {"delimiter": b",", "header": True, "encoding": "utf-8"}
    _, slow = scan(broken, 4 << 20, collect=True, **opts)
    _, fast = scan(broken, 4 << 20, collect=False, infer_types=False, **opts)
    keys = ("records", "errors_total", "errors", "lines", "error_kinds")
    assert {k: fast[k] for k in keys} == {k: slow[k] for k in keys}
    assert slow["errors_total"] >= 12


def test_single_column_blank_lines_on_fast_path():
    """A blank line is not a record, also where a one-column block is checked as a whole."""
    data = b"value\n" + b"".join(
        b"%d\n\n" % i if i % 1000 == 0 else b"%d\n" % i for i in range(50_000)
    )
    expected = oracle(data)
    for collect in (True, False):
        _, summary = scan(data, 1 << 18, collect=collect, infer_types=False)
        assert summary["records"] == len(expected) - 1
        assert summary["lines"] == data.count(b"\n")
