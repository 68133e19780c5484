"""The validate plugin's pieces: streaming UTF-8 check and content sniffing, against Python's
own decoder and known magic numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tusserver.processing.validate import Utf8Checker, sniff_type


def check(data: bytes, cuts: list[int]) -> Utf8Checker:
    checker = Utf8Checker()
    previous = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        checker.update(data[previous:cut])
        previous = cut
    checker.finish()
    return checker


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(max_size=60),
    damage=st.lists(st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=2)), max_size=2),
    cuts=st.lists(st.integers(0, 250), max_size=8),
)
def test_utf8_checker_matches_python_decoder(text, damage, cuts):
    """Valid iff bytes.decode succeeds; the error offset is the decoder's, wherever the chunk
    boundaries fall (inside multi-byte characters too)."""
    data = bytearray(text.encode())
    for position, garbage in damage:
        data[position:position] = garbage
    data = bytes(data)
    checker = check(data, cuts)
    try:
        data.decode("utf-8")
        expected = None
    except UnicodeDecodeError as exc:
        expected = exc.start
    assert checker.ok is (expected is None)
    assert checker.error_at == expected


def test_utf8_truncated_at_end_of_file():
    checker = check("abcé".encode()[:-1], [2])
    assert not checker.ok and checker.error_at == 3


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"%PDF-1.7\n", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n\0\0", "image/png"),
        (b"PK\x03\x04rest", "application/zip"),
        (b"\x1f\x8b\x08\0", "application/gzip"),
        (b"PAR1\0\0", "application/vnd.apache.parquet"),
        (b"", "application/x-empty"),
        (b"a,b\n1,2\n3,4\n", "text/csv"),
        (b'id;note\n1;"x;y"\n2;z\n', "text/csv"),
        (b'{"a": 1}', "application/json"),
        (b"just some words\nand more words\n", "text/plain"),
        (bytes(range(256)), "application/octet-stream"),
    ],
)
def test_sniff_type(head, mime):
    assert sniff_type(head) == mime
