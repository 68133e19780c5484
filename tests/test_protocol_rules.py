"""Unit tests of the pure protocol rules (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tusserver.protocol import (
    TusError,
    encode_metadata,
    http_date,
    is_valid_upload_id,
    parse_metadata,
    parse_non_negative,
)


@given(st.dictionaries(st.from_regex(r"[a-z0-9_.-]{1,20}", fullmatch=True), st.text(max_size=50)))
def test_metadata_roundtrip(values):
    encoded = encode_metadata(values)
    parsed = parse_metadata(encoded)
    assert (parsed.text() if parsed else {}) == {k: v for k, v in values.items()}


@given(st.text(max_size=200))
def test_metadata_parser_never_crashes(raw):
    try:
        parse_metadata(raw)
    except TusError as exc:
        assert exc.status == 400


@given(st.text(max_size=40))
def test_offsets_are_digits_only(raw):
    try:
        value = parse_non_negative("Upload-Offset", raw)
    except TusError as exc:
        assert exc.status == 400
    else:
        assert value >= 0 and raw.strip().isdigit()


@pytest.mark.parametrize("upload_id", ["..", "a/b", "", "a" * 129, "x.y", "\x00", "é"])
def test_bad_ids(upload_id):
    assert not is_valid_upload_id(upload_id)


def test_http_date_is_imf_fixdate():
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
