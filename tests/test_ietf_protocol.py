"""Unit tests of the pure IETF resumable-upload rules (tusserver/ietf.py), no server needed.

Each test names the draft section it checks ("draft-03 §6" is section 6 of
draft-ietf-httpbis-resumable-upload-03), and the decisions on ambiguous points name the
research note's pitfalls (P1-P24). Most tests run over every interop version.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from tusserver import ietf
from tusserver.ietf import (
    INTEROP_VERSIONS,
    SUPPORTED,
    Append,
    Cancellation,
    Creation,
    IetfError,
    Item,
    OffsetRetrieval,
    Options,
    StructuredFieldError,
    Token,
    UnknownVersion,
    classify,
)

ALL = sorted(INTEROP_VERSIONS)  # 3..9, 9 provisional
SERVED = sorted(SUPPORTED)  # 3..8
URI = "https://iana.org/assignments/http-problem-types#"


def row(version: int) -> ietf.Interop:
    return INTEROP_VERSIONS[version]


def req(method: str, version: int | str | None, *, upload_url: bool = False, **headers: str):
    """classify() with every interop row served, headers given as Upload_Offset="5"."""
    fields = {name.replace("_", "-"): value for name, value in headers.items()}
    if version is not None:
        fields[ietf.INTEROP_HEADER] = str(version)
    return classify(method, upload_url=upload_url, headers=fields, versions=INTEROP_VERSIONS)


def complete_field(version: int, complete: bool) -> dict[str, str]:
    """The request field saying `complete` in this version's spelling."""
    return {row(version).complete_field.replace("-", "_"): row(version).complete_value(complete)}


def append(version: int, **headers: str):
    """A PATCH to an upload URL with the media type the version needs (draft-04 §6 on)."""
    if row(version).partial_upload_required:
        headers.setdefault("Content_Type", ietf.PARTIAL_UPLOAD)
    return req("PATCH", version, upload_url=True, **headers)


def append_raises(version: int, **headers: str) -> IetfError:
    """The IetfError that an append raises."""
    with pytest.raises(IetfError) as info:
        append(version, **headers)
    return info.value


def raises(method: str, version: int, *, upload_url: bool = False, **headers: str) -> IetfError:
    """The IetfError that classify() raises for this request."""
    with pytest.raises(IetfError) as info:
        req(method, version, upload_url=upload_url, **headers)
    return info.value


# --- The table ------------------------------------------------------------------------------


def test_served_versions_and_the_provisional_row():
    """Interop 3-8 are served by default; 9 (draft-12) is a row, but opt-in (note §0.2, P24)."""
    assert SERVED == [3, 4, 5, 6, 7, 8]
    assert [*SERVED, 9] == ALL
    assert [v for v in ALL if row(v).provisional] == [9]


@pytest.mark.parametrize(
    ("version", "drafts"),
    [
        (3, ("-01",)),
        (4, ("-02",)),
        (5, ("-03",)),
        (6, ("-04", "-05")),
        (7, ("-06", "-07", "-08")),
        (8, ("-09", "-10", "-11")),
        (9, ("-12",)),
    ],
)
def test_drafts_per_interop_version(version, drafts):
    """ "The current interop version is N" in each draft's Draft Version Identification section
    (-01…-05 §4.2, -06…-08 §4.2.3, -09 on Appendix B)."""
    assert row(version).drafts == drafts
    assert row(version).version == version


@pytest.mark.parametrize("version", ALL)
def test_every_row_cites_each_procedure(version):
    """Error details name the section of the request's own draft."""
    for key in ("creation", "offset", "append", "cancel", "fields", "interop"):
        assert row(version).cite(key).startswith("draft-")


# --- Structured fields (RFC 9651) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("999999999999999", 999_999_999_999_999),
        (" 7 ", 7),
        ("5;a=1", 5),
        ('5;a;b=?0;c=tok;d="s";e=:AQ==:;f=1.5', 5),
        ("-0", 0),
    ],
)
def test_sf_integer_accepts(text, value):
    """Upload-Offset / Upload-Length are sf-integers (draft-01 §9.1, -06 §4.1.1, §4.1.3);
    parameters are valid SF and ignored (P17)."""
    assert ietf.parse_integer(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1000000000000000",  # 16 digits: RFC 9651 §3.3.1 allows at most 15
        "1.5",
        "+1",
        "0x10",
        "1 2",
        "1,2",
        "?1",
        '"1"',
        "1;",
        "1;A=1",
        "a",
        "-",
        "1e3",
        "\u0661",  # an Arabic-Indic digit: str.isdigit() would say yes
        "-1",  # valid SF, but offsets and lengths are non-negative (-09 §4.1.1)
    ],
)
def test_sf_integer_rejects(text):
    with pytest.raises(StructuredFieldError):
        ietf.parse_integer(text)


def test_sf_integer_sign_when_allowed():
    assert ietf.parse_integer("-12", non_negative=False) == -12


@pytest.mark.parametrize(
    ("text", "value"),
    [("?1", True), ("?0", False), ("?1;a=b", True), (" ?0 ", False), ("?1;x", True)],
)
def test_sf_boolean_accepts(text, value):
    """Upload-Complete / Upload-Incomplete are sf-booleans (draft-01 §9.2, -02 §8.2); `?1;a=b`
    is valid SF where tusd's string compare would reject it (P17)."""
    assert ietf.parse_boolean(text) is value


@pytest.mark.parametrize("text", ["", "?", "?2", "1", "true", "?1, ?0", "?1 ;a", "?01", "?1;"])
def test_sf_boolean_rejects(text):
    with pytest.raises(StructuredFieldError):
        ietf.parse_boolean(text)


@pytest.mark.parametrize(
    ("text", "version"),
    [("6", 6), ("6;x=1", 6), ("abc", None), ("-1", -1), ("6, 7", None), ("?1", None), ("", None)],
)
def test_interop_version_parsing(text, version):
    """Upload-Draft-Interop-Version is an Integer (-01 §4.2 ABNF, -02 §4.2 on)."""
    assert ietf.parse_interop_version(text) == version


def test_rfc9651_dictionary_examples():
    """RFC 9651 §3.2 and §3.3 examples: strings, byte sequences, bare keys, parameters, inner
    lists, decimals, dates and display strings all parse."""
    parsed = ietf.parse_dictionary('en="Applepie", da=:w4ZibGV0w6ZydGU=:')
    assert parsed == {
        "en": Item("Applepie", {}),
        "da": Item("Æbletærte".encode(), {}),
    }
    parsed = ietf.parse_dictionary("a=?0, b, c; foo=bar")
    assert parsed == {
        "a": Item(False, {}),
        "b": Item(True, {}),
        "c": Item(True, {"foo": Token("bar")}),
    }
    parsed = ietf.parse_dictionary("rating=1.5, feelings=(joy sadness);p")
    feelings = parsed["feelings"]
    assert isinstance(feelings, ietf.InnerList)
    assert [item.value for item in feelings.items] == ["joy", "sadness"]
    assert feelings.params == {"p": True}
    assert str(parsed["rating"].value) == "1.5"  # type: ignore[union-attr]
    assert ietf.parse_item("@1659578233").value == ietf.Date(1659578233)
    display = ietf.parse_item('%"This is intended for display to %c3%bcsers."').value
    assert display == ietf.DisplayString("This is intended for display to üsers.")
    assert ietf.parse_item('"a \\"b\\" \\\\"').value == 'a "b" \\'


@pytest.mark.parametrize(
    "text", ["a=1,", "a=1,,b", "A=1", "a=(1 2", "a=1 b=2", 'a="x', "a=:@@:", 'a=%"%C3"', "a=1.1234"]
)
def test_sf_dictionary_rejects(text):
    with pytest.raises(StructuredFieldError):
        ietf.parse_dictionary(text)


@given(st.integers(-ietf.MAX_SF_INTEGER, ietf.MAX_SF_INTEGER))
def test_sf_integer_roundtrip(number):
    text = ietf.serialize_bare_item(number)
    assert ietf.parse_integer(text, non_negative=False) == number


@given(st.integers(ietf.MAX_SF_INTEGER + 1, 10**30))
def test_sf_integer_beyond_15_digits(number):
    with pytest.raises(StructuredFieldError):
        ietf.serialize_bare_item(number)
    with pytest.raises(StructuredFieldError):
        ietf.parse_integer(str(number))


keys = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,10}", fullmatch=True)
members = st.dictionaries(
    keys, st.one_of(st.booleans(), st.integers(-ietf.MAX_SF_INTEGER, ietf.MAX_SF_INTEGER))
)


@given(members)
def test_sf_dictionary_roundtrip(values):
    """Upload-Limit is a Dictionary (-04 §8.2, -06 §4.1.4): what we serialise parses back."""
    parsed = ietf.parse_dictionary(ietf.serialize_dictionary(values))
    assert {key: member.value for key, member in parsed.items()} == values  # type: ignore[union-attr]


@given(st.text(max_size=60))
def test_sf_parsers_only_raise_their_error(text):
    """Garbage is a StructuredFieldError (a 400 or an ignored field), never a crash."""
    for parse in (ietf.parse_item, ietf.parse_dictionary):
        with contextlib.suppress(StructuredFieldError):
            parse(text)
    version = ietf.parse_interop_version(text)
    assert version is None or type(version) is int


@given(st.booleans(), st.lists(st.tuples(keys, st.integers(0, 99)), max_size=3))
def test_sf_boolean_with_parameters(value, params):
    text = ("?1" if value else "?0") + "".join(f";{k}={v}" for k, v in params)
    assert ietf.parse_boolean(text) is value


# --- Which requests are IETF requests -------------------------------------------------------


def test_not_ietf_without_the_interop_header():
    assert req("POST", None, Upload_Complete="?1") is None


def test_tus_resumable_wins():
    """A tus 1.0 request that also carries the interop header stays a tus request."""
    assert req("POST", 6, Tus_Resumable="1.0.0", Upload_Complete="?1") is None
    assert req("POST", 6, Upload_Complete="?1") is not None


@pytest.mark.parametrize(
    ("method", "upload_url"),
    [
        ("GET", False),
        ("HEAD", False),
        ("DELETE", False),
        ("POST", True),
        ("PUT", True),
        ("GET", True),
    ],
)
def test_no_procedure(method, upload_url):
    """draft-01 §8: creation is any content method at a non-upload URL (not GET, HEAD, DELETE,
    OPTIONS, -01 §4); HEAD/DELETE/PATCH at an upload URL; otherwise "Not a resumable upload"."""
    for version in SERVED:
        assert req(method, version, upload_url=upload_url, Upload_Complete="?1") is None


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("version", ALL)
def test_any_content_method_at_the_creation_url_creates(method, version):
    """-01 §4 "all methods are allowed with the exception of GET, HEAD, DELETE, and OPTIONS";
    -06 §4.2.1 "such as POST, PUT, and PATCH"; the URL decides first (-01 §8, P22)."""
    result = req(method, version, **complete_field(version, True))
    assert isinstance(result, Creation)


def test_header_names_are_case_insensitive_and_repeats_combine():
    """RFC 9110 §5.1 names are case-insensitive; §5.3 repeated lines combine with commas, which
    makes a repeated Item field invalid SF rather than silently first- or last-wins."""
    result = classify(
        "PATCH",
        upload_url=True,
        headers={
            "UPLOAD-DRAFT-INTEROP-VERSION": "5",
            "upload-OFFSET": "3",
            "upload-complete": "?0",
        },
    )
    assert isinstance(result, Append) and result.offset == 3 and not result.complete
    repeated = Headers(
        raw=[
            (b"upload-draft-interop-version", b"5"),
            (b"upload-offset", b"1"),
            (b"upload-offset", b"2"),
            (b"upload-complete", b"?0"),
        ]
    )
    with pytest.raises(IetfError) as info:
        classify("PATCH", upload_url=True, headers=repeated)
    assert info.value.status == 400


# --- Unknown versions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "one_shot"),
    [
        ({"Upload_Complete": "?1"}, True),
        ({"Upload_Incomplete": "?0"}, True),
        ({}, True),
        ({"Upload_Complete": "?0"}, False),
        ({"Upload_Incomplete": "?1"}, False),
        ({"Upload_Complete": "nonsense"}, True),
    ],
)
@pytest.mark.parametrize("value", ["2", "10", "abc", "-1"])
def test_unknown_version_creation(value, headers, one_shot):
    """No 104 for a missing or mismatching version (draft-01 §4.2 … -11 Appendix B). A
    creation that does not announce more parts (a client unsure of support "MUST NOT", -01
    §4.1) can be stored as a plain upload; anything else gets 400 (P23)."""
    result = req("POST", value, **headers)
    assert isinstance(result, UnknownVersion)
    assert result.one_shot is one_shot
    assert result.supported == (3, 4, 5, 6, 7, 8, 9)


def test_unknown_version_error_names_the_supported_versions():
    result = classify("HEAD", upload_url=True, headers={ietf.INTEROP_HEADER: "42"})
    assert isinstance(result, UnknownVersion) and not result.one_shot
    status, headers, body = result.error().render(None)
    assert status == 400
    assert headers["Content-Type"] == ietf.PROBLEM_JSON
    document = json.loads(body)
    assert document["type"] == "about:blank"
    assert document["status"] == 400
    assert "'42'" in document["detail"] and "3, 4, 5, 6, 7, 8" in document["detail"]


def test_version_9_is_opt_in():
    """v9* is rebuilt from the editor's copy (note §0.2): unknown unless the caller asks."""
    headers = {ietf.INTEROP_HEADER: "9", "Upload-Complete": "?0"}
    assert isinstance(classify("POST", upload_url=False, headers=headers), UnknownVersion)
    assert isinstance(req("POST", 9, Upload_Complete="?0"), Creation)


def test_unknown_version_options_is_plain_http():
    assert req("OPTIONS", 42) is None


# --- Creation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "field", "value", "complete"),
    [
        (3, "Upload_Incomplete", "?0", True),  # draft-01 §9.2: true means NOT complete
        (3, "Upload_Incomplete", "?1", False),
        *[(v, "Upload_Complete", "?1", True) for v in ALL if v != 3],  # -02 §8.2 on
        *[(v, "Upload_Complete", "?0", False) for v in ALL if v != 3],
    ],
)
def test_creation_completeness(version, field, value, complete):
    """draft-01 §4 "MUST include the Upload-Incomplete header field"; -02 §4 on Upload-Complete."""
    result = req("POST", version, **{field: value})
    assert isinstance(result, Creation)
    assert result.complete is complete
    assert result.interop is row(version)


@pytest.mark.parametrize("version", ALL)
def test_creation_needs_the_version_s_completeness_field(version):
    """draft-01 §4 / -02 §4 "The request MUST include" it; -06 §4.2.2 creation is "a request
    with the Upload-Complete header field". The other spelling does not count."""
    other = "Upload_Complete" if version == 3 else "Upload_Incomplete"
    for headers in ({}, {other: "?0"}):
        error = raises("POST", version, **headers)
        assert error.status == 400
        assert row(version).complete_field in error.detail
        assert row(version).cite("creation") in error.detail


@pytest.mark.parametrize("version", ALL)
def test_creation_invalid_completeness(version):
    """Invalid booleans: 400 up to v7; from v8 "Other values MUST cause the entire header field
    to be ignored" (-09 §4.1.2), which leaves the field missing: still 400 (P17)."""
    field = row(version).complete_field.replace("-", "_")
    error = raises("POST", version, **{field: "yes"})
    assert error.status == 400
    expected = "is required" if version >= 8 else "must be ?0 or ?1"
    assert expected in error.detail


@pytest.mark.parametrize("version", ALL)
def test_creation_length_indicators(version):
    """-02 §4: `?1` + Content-Length is the final size; -05 §4 / -06 §4.1.3: Upload-Length;
    "If indicators (1) and (2) are both present in the same request, their indicated lengths
    MUST match" (-06 §4.1.3), "MUST reject the request … 400" (-05 §4)."""
    done, more = complete_field(version, True), complete_field(version, False)
    result = req("POST", version, Content_Length="100", **done)
    assert isinstance(result, Creation) and result.length == 100 and result.content_length == 100
    result = req("POST", version, Content_Length="10", Upload_Length="100", **more)
    assert isinstance(result, Creation) and result.length == 100 and not result.complete
    result = req("POST", version, Content_Length="10", **more)
    assert isinstance(result, Creation) and result.length is None
    result = req("POST", version, Upload_Length="100", Content_Length="100", **done)
    assert isinstance(result, Creation) and result.length == 100
    for headers in (
        {"Upload_Length": "100", "Content_Length": "99", **done},
        {"Upload_Length": "10", "Content_Length": "11", **more},
    ):
        error = raises("POST", version, **headers)
        assert error.status == 400
        assert error.problem == ietf.INCONSISTENT_LENGTH


@pytest.mark.parametrize("version", ALL)
def test_creation_tolerates_offset_zero_only(version):
    """ "The request MUST NOT include the Upload-Offset header" (draft-01 … -05 §4); Apple's
    reference server tolerates `Upload-Offset: 0`, and so do we (note §3.3)."""
    done = complete_field(version, True)
    assert isinstance(req("POST", version, Upload_Offset="0", **done), Creation)
    assert raises("POST", version, Upload_Offset="5", **done).status == 400


@pytest.mark.parametrize("version", ALL)
def test_zero_length_creation_completes_for_tus_js_client(version):
    """tus-js-client (interop 5 and 6) creates an empty file with `?0` + Upload-Length: 0 and
    never sends `?1`; those two versions complete it at creation (P8). Others stay strict
    ("The upload is not automatically completed if the offset reaches the upload's final
    size", -05 §4, -06 §4.1.3)."""
    result = req(
        "POST", version, Upload_Length="0", Content_Length="0", **complete_field(version, False)
    )
    assert isinstance(result, Creation)
    assert result.complete is (version in (5, 6))
    assert result.length == 0


@pytest.mark.parametrize("version", ALL)
def test_creation_metadata(version):
    """Content-Type / Content-Disposition of the creation are the representation metadata
    (draft-01 §4, -06 §4.2.1); application/partial-upload is framing, not a file type (P11)."""
    result = req(
        "POST",
        version,
        Content_Type="text/csv; charset=utf-8",
        Content_Disposition='inline; filename="data.csv"',
        **complete_field(version, True),
    )
    assert isinstance(result, Creation)
    assert result.metadata == {"filetype": "text/csv", "filename": "data.csv"}
    result = req("POST", version, Content_Type=ietf.PARTIAL_UPLOAD, **complete_field(version, True))
    assert isinstance(result, Creation) and result.metadata == {}


# --- Append ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_append_media_type(version):
    """-04 §6 on: "MUST use the PATCH method with the application/partial-upload media type";
    not before (tus-js-client 'ietf-draft-03' sends none, P12). A wrong type is 415 with
    Accept-Patch (RFC 5789 §2.2); parameters and case do not matter."""
    done = complete_field(version, True)
    for content_type in ("Application/Partial-Upload; x=1", ietf.PARTIAL_UPLOAD):
        result = req(
            "PATCH", version, upload_url=True, Upload_Offset="0", Content_Type=content_type, **done
        )
        assert isinstance(result, Append)
    for headers in ({}, {"Content_Type": "application/offset+octet-stream"}):
        if row(version).partial_upload_required:
            error = raises("PATCH", version, upload_url=True, Upload_Offset="0", **headers, **done)
            assert error.status == 415
            assert error.headers == {"Accept-Patch": ietf.PARTIAL_UPLOAD}
            assert row(version).cite("append") in error.detail
        else:
            assert isinstance(
                req("PATCH", version, upload_url=True, Upload_Offset="0", **headers, **done), Append
            )
    assert row(version).partial_upload_required is (version >= 6)


@pytest.mark.parametrize("version", ALL)
def test_append_needs_an_offset(version):
    """ "The Upload-Offset header field … MUST be set to the resumption offset" (draft-01 §6);
    "MUST indicate the offset" (-06 §4.4.1)."""
    headers = {"Content_Type": ietf.PARTIAL_UPLOAD, **complete_field(version, False)}
    error = raises("PATCH", version, upload_url=True, **headers)
    assert error.status == 400 and "Upload-Offset is required" in error.detail


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("offset", ["-1", "1.0", "x", "1000000000000000"])
def test_append_invalid_offset(version, offset):
    """An invalid Upload-Offset is a 400 up to v7; from v8 it is ignored (-09 §4.1.1 "Other
    values MUST cause the entire header field to be ignored"), which leaves none: 400 (P17)."""
    headers = {"Content_Type": ietf.PARTIAL_UPLOAD, **complete_field(version, False)}
    error = raises("PATCH", version, upload_url=True, Upload_Offset=offset, **headers)
    assert error.status == 400
    expected = "is required" if row(version).invalid_fields_ignored else "non-negative integer"
    assert expected in error.detail


@pytest.mark.parametrize("version", ALL)
def test_append_invalid_upload_length(version):
    """Upload-Length: 400 in v6-7 where it is a field (-05 §8.4, -06 §4.1.3), ignored in v8+
    (-09 §4.1.3, P17) and before v6, where only tus-js-client sends it, in the tus sense."""
    headers = {"Upload_Offset": "0", "Upload_Length": "-5", **complete_field(version, False)}
    if version in (6, 7):
        assert append_raises(version, **headers).status == 400
    else:
        result = append(version, **headers)
        assert isinstance(result, Append) and result.length is None


@pytest.mark.parametrize("version", ALL)
def test_append_without_completeness(version):
    """v3: "If the end of the request body is not the end of the upload, the Upload-Incomplete
    header field MUST be set to true" (draft-01 §6), so without it this is the last part; -02…-05
    §6 say the same of `Upload-Complete: ?0`. From -06 §4.4.1 "The request MUST include the
    Upload-Complete header field": 400 (P2)."""
    if version <= 6:
        result = append(version, Upload_Offset="7", Content_Length="3")
        assert isinstance(result, Append)
        assert result.complete and result.complete_implied
        assert result.length == 10  # the body is the rest of the upload
    else:
        error = append_raises(version, Upload_Offset="7")
        assert error.status == 400 and "Upload-Complete is required" in error.detail
    assert row(version).absent_complete_on_append is (True if version <= 6 else None)


@pytest.mark.parametrize("version", [5, 6])
def test_tus_js_client_stream_end(version):
    """tus-js-client ends a stream with a PATCH that has no body and no Upload-Complete, plus
    Upload-Length when the length was deferred (note §3.2): it completes the upload (P2, P8)."""
    result = append(version, Upload_Offset="300", Upload_Length="300", Content_Length="0")
    assert isinstance(result, Append) and result.complete and result.length == 300


@pytest.mark.parametrize("version", ALL)
def test_append_completeness_values(version):
    """v3 inverts the field (draft-01 §9.2); the others do not (-02 §8.2, -06 §4.1.2)."""
    done = append(version, Upload_Offset="0", **complete_field(version, True))
    more = append(version, Upload_Offset="0", **complete_field(version, False))
    assert isinstance(done, Append) and done.complete and not done.complete_implied
    assert isinstance(more, Append) and not more.complete


@pytest.mark.parametrize("version", ALL)
def test_append_length_indicators(version):
    """ "The length is then the sum of the current offset and the Content-Length" (-06 §4.1.3
    (1)); a different Upload-Length in the same request is inconsistent (-02 §6: 400)."""
    done = complete_field(version, True)
    result = append(version, Upload_Offset="100", Content_Length="50", **done)
    assert isinstance(result, Append) and result.length == 150
    result = append(version, Upload_Offset="100", Content_Length="50", Upload_Length="150", **done)
    assert isinstance(result, Append) and result.length == 150
    error = append_raises(
        version, Upload_Offset="100", Content_Length="50", Upload_Length="200", **done
    )
    assert error.status == 400 and error.problem == ietf.INCONSISTENT_LENGTH
    more = complete_field(version, False)
    error = append_raises(
        version, Upload_Offset="100", Content_Length="60", Upload_Length="150", **more
    )
    assert error.problem == ietf.INCONSISTENT_LENGTH
    result = append(version, Upload_Offset="100", Content_Length="50", Upload_Length="150", **more)
    assert isinstance(result, Append) and not result.complete  # "The offset could match the
    # length, but the upload can still be incomplete" (-06 §4.1.3)


# --- Offset retrieval, cancellation, OPTIONS ------------------------------------------------

HEAD_FORBIDDEN = {
    3: {"Upload-Offset", "Upload-Incomplete"},  # draft-01 §5
    4: {"Upload-Offset", "Upload-Complete"},  # draft-02 §5
    5: {"Upload-Offset", "Upload-Complete"},  # draft-03 §5
    6: {"Upload-Offset", "Upload-Complete", "Upload-Length"},  # draft-05 §5
    7: set(),  # -06 §4.3.2 dropped the rule (P13)
    8: set(),
    9: set(),
}
DELETE_FORBIDDEN = {
    3: {"Upload-Offset", "Upload-Incomplete"},  # draft-01 §7
    4: {"Upload-Offset", "Upload-Complete"},  # draft-02 §7
    5: {"Upload-Offset", "Upload-Complete"},  # draft-03 §7
    6: {"Upload-Offset", "Upload-Complete"},  # draft-05 §7 (Upload-Length not added)
    7: set(),
    8: set(),
    9: set(),
}
FIELDS = {
    "Upload-Offset": "0",
    "Upload-Complete": "?0",
    "Upload-Incomplete": "?1",
    "Upload-Length": "5",
}


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("name", sorted(FIELDS))
def test_head_and_delete_with_upload_fields(version, name):
    """ "The server MUST reject requests with either of these fields by responding with a 400"
    (draft-01…-05 §5 and §7), only in the versions that say so (P13)."""
    header = {name.replace("-", "_"): FIELDS[name]}
    for method, forbidden, kind in (
        ("HEAD", HEAD_FORBIDDEN, OffsetRetrieval),
        ("DELETE", DELETE_FORBIDDEN, Cancellation),
    ):
        if name in forbidden[version]:
            error = raises(method, version, upload_url=True, **header)
            assert error.status == 400 and name in error.detail
        else:
            assert isinstance(req(method, version, upload_url=True, **header), kind)


@pytest.mark.parametrize("version", ALL)
def test_get_retrieves_the_offset_only_in_v9(version):
    """v9* §4.3.2: "A successful response to a HEAD or GET request against an upload resource";
    before that GET is not part of the protocol (a plain download)."""
    result = req("GET", version, upload_url=True)
    if version == 9:
        assert result == OffsetRetrieval(row(9), "GET")
    else:
        assert result is None
    assert req("HEAD", version, upload_url=True) == OffsetRetrieval(row(version), "HEAD")


@pytest.mark.parametrize("version", ALL)
def test_options(version):
    """OPTIONS with the interop header is discovery (-05 §8.2, -06 §4.1.4, -10 §4.1.4)."""
    assert req("OPTIONS", version) == Options(row(version), False)
    assert req("OPTIONS", version, upload_url=True) == Options(row(version), True)


# --- Response headers -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_completeness_header(version):
    """`Upload-Incomplete: ?0` means complete in interop 3 (draft-01 §9.2); from 4
    `Upload-Complete: ?1` (-02 §8.2)."""
    if version == 3:
        assert ietf.completeness_header(row(3), True) == {"Upload-Incomplete": "?0"}
        assert ietf.completeness_header(row(3), False) == {"Upload-Incomplete": "?1"}
    else:
        assert ietf.completeness_header(row(version), True) == {"Upload-Complete": "?1"}
        assert ietf.completeness_header(row(version), False) == {"Upload-Complete": "?0"}


@pytest.mark.parametrize("version", ALL)
def test_upload_limit(version):
    """Upload-Limit only from v6 (-04 §8.2); `expires` in v6, `max-age` from v7 ("Rename
    expires limit to max-age", -06 change log, P10); `min-size=0` always (-05 §8.2 "MUST use
    min-size=0 instead of an empty header value")."""
    value = ietf.upload_limit(row(version), max_size=1000, expires_in=3600.9)
    bare = ietf.upload_limit(row(version))
    if version < 6:
        assert value is None and bare is None
        return
    age = "expires" if version == 6 else "max-age"
    assert value == f"max-size=1000, min-size=0, {age}=3600"
    assert bare == "min-size=0"
    parsed = ietf.parse_dictionary(value)
    assert parsed["max-size"] == Item(1000, {})
    assert ietf.upload_limit(row(version), max_size=10**16, expires_in=-5) == f"min-size=0, {age}=0"


@pytest.mark.parametrize("version", ALL)
def test_creation_interim_headers(version):
    """The 104: Location "MUST be set to the upload URL" (draft-01 §4), the interop version
    echoed (-01 §4.2 … -11 App. B), Upload-Limit where defined (-04 §4 MAY, -09 §4.2.2 MUST)."""
    limit = ietf.upload_limit(row(version), max_size=10)
    headers = ietf.creation_interim_headers(row(version), "https://x/files/a", limit)
    expected = {"Location": "https://x/files/a", ietf.INTEROP_HEADER: str(version)}
    if version >= 6:
        expected["Upload-Limit"] = "max-size=10, min-size=0"
    assert headers == expected
    assert ietf.creation_interim_headers(row(version), "u", "min-size=0").keys() == (
        expected.keys()
    )


@pytest.mark.parametrize("version", ALL)
def test_progress_interim_headers(version):
    """Progress 104s with Upload-Offset exist from -03 (§4, §6 MAY; -09 §4.4.2 SHOULD) and
    "MUST NOT include the Location header field"; none in 3 and 4 (P9)."""
    headers = ietf.progress_interim_headers(row(version), 4096)
    if version < 5:
        assert headers is None
    else:
        assert headers == {"Upload-Offset": "4096", ietf.INTEROP_HEADER: str(version)}


@pytest.mark.parametrize("version", ALL)
def test_offset_retrieval_headers(version):
    """HEAD: Upload-Offset and completeness MUST (draft-01 §5), Upload-Length "if one was
    recorded" (-05 §5, -06 §4.3.2), Upload-Limit (-04 §5 MAY, -09 §4.3.2 MUST), and
    `Cache-Control: no-store` SHOULD; status 204 in every version (P15)."""
    interop = row(version)
    headers = ietf.offset_retrieval_headers(
        interop, offset=5, complete=False, length=9, limit=ietf.upload_limit(interop)
    )
    expected = {"Upload-Offset": "5", **ietf.completeness_header(interop, False)}
    expected["Cache-Control"] = "no-store"
    expected["Upload-Length"] = "9"  # in 3-5 too, for tus-js-client (P8)
    if version >= 6:
        expected["Upload-Limit"] = "min-size=0"
    assert headers == expected
    unknown = ietf.offset_retrieval_headers(interop, offset=5, complete=True)
    assert "Upload-Length" not in unknown
    assert interop.head_status == 204


@pytest.mark.parametrize("version", ALL)
def test_final_response_headers_and_status(version):
    """Creation: 201 + Location + Upload-Offset + completeness (draft-01 §4, -06 §4.2.2, P5,
    P19). Append: 201 in 3-6 (-01…-05 §6 "MUST … 201 (Created)"), 204 from v7 ("2xx", -06
    §4.4.2, P4); the completing response says `?1` (-06 §4.4.2 MUST)."""
    interop = row(version)
    headers = ietf.creation_response_headers(
        interop, location="/files/a", offset=3, complete=False, limit="min-size=0"
    )
    assert headers["Location"] == "/files/a" and headers["Upload-Offset"] == "3"
    assert headers[interop.complete_field] == interop.complete_value(False)
    assert ("Upload-Limit" in headers) is (version >= 6)
    assert ietf.append_response_headers(interop, offset=8, complete=True) == {
        "Upload-Offset": "8",
        **ietf.completeness_header(interop, True),
    }
    assert ietf.success_status(interop, creation=True) == 201
    assert ietf.success_status(interop, creation=False) == (201 if version <= 6 else 204)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (3, {}),  # OPTIONS is not part of -01…-03
        (4, {}),
        (5, {}),
        (6, {"Upload-Limit": "max-size=50, min-size=0"}),  # -05 §8.2 MUST
        (7, {"Upload-Limit": "max-size=50, min-size=0"}),  # -06 §4.1.4 MUST
        (8, {"Accept-Patch": ietf.PARTIAL_UPLOAD, "Upload-Limit": "max-size=50, min-size=0"}),
        (9, {"Upload-Limit": "max-size=50, min-size=0"}),  # v9* §4.1.4: Accept-Patch removed
    ],
)
def test_options_headers(version, expected):
    """v8 spans -09 (Upload-Limit MUST) and -10/-11 (Accept-Patch MUST): both are sent (P1)."""
    assert ietf.options_headers(row(version), max_size=50) == expected


# --- Problem documents (RFC 9457) -----------------------------------------------------------


def rendered(error: IetfError, version: int | None):
    status, headers, body = error.render(row(version) if version is not None else None)
    document = json.loads(body) if headers["Content-Type"] == ietf.PROBLEM_JSON else None
    return status, headers, body, document


def test_problem_type_uris_are_exact():
    """The URIs as the drafts write them (-04 §10, -06 §6, -09 §7), without RFC 8792 breaks."""
    assert ietf.PROBLEM_BASE + ietf.MISMATCHING_OFFSET == URI + "mismatching-upload-offset"
    assert ietf.PROBLEM_BASE + ietf.COMPLETED_UPLOAD == URI + "completed-upload"
    assert ietf.PROBLEM_BASE + ietf.INCONSISTENT_LENGTH == URI + "inconsistent-upload-length"


@pytest.mark.parametrize(
    ("version", "types"),
    [
        (3, set()),
        (4, set()),
        (5, set()),
        (6, {"mismatching-upload-offset", "completed-upload"}),  # -04 §10
        (7, {"mismatching-upload-offset", "completed-upload", "inconsistent-upload-length"}),
        (8, {"mismatching-upload-offset", "completed-upload", "inconsistent-upload-length"}),
        (9, {"mismatching-upload-offset", "inconsistent-upload-length"}),  # completed removed
    ],
)
def test_problem_types_per_version(version, types):
    """Only types the version defines are sent (P6, P7)."""
    for problem in (ietf.MISMATCHING_OFFSET, ietf.COMPLETED_UPLOAD, ietf.INCONSISTENT_LENGTH):
        assert ietf.sends_problem_type(row(version), problem) is (problem in types)


@pytest.mark.parametrize("version", ALL)
def test_mismatching_offset(version):
    """409 with the correct Upload-Offset in every version (draft-01 §6, -06 §4.4.2), completeness
    false (v9* §4.4.2 MUST), and from v6 the mismatching-upload-offset document with both
    members ("SHOULD populate both members", -04 §10.1)."""
    error = ietf.mismatching_offset(row(version), expected=100, provided=250)
    status, headers, body, document = rendered(error, version)
    assert status == 409
    assert headers["Upload-Offset"] == "100"
    assert headers[row(version).complete_field] == row(version).complete_value(False)
    if version < 6:
        assert headers["Content-Type"].startswith("text/plain") and b"250" in body
    else:
        assert document == {
            "type": URI + "mismatching-upload-offset",
            "title": "offset from request does not match offset of resource",
            "status": 409,
            "detail": error.detail,
            "expected-offset": 100,
            "provided-offset": 250,
        }


@pytest.mark.parametrize("version", ALL)
def test_inconsistent_length(version):
    """400 in every version that defines length rules (-02 §6, -05 §4); the
    inconsistent-upload-length type from v7 (-06 §6.3); about:blank in v6, text before."""
    error = ietf.length_exceeded(row(version), 10)
    status, _, _, document = rendered(error, version)
    assert status == 400
    if version < 6:
        assert document is None
    elif version == 6:
        assert document is not None and document["type"] == "about:blank"
        assert document["title"] == "Bad Request"
    else:
        assert document is not None and document["type"] == URI + "inconsistent-upload-length"
        assert document["title"] == "inconsistent length values for upload"


@pytest.mark.parametrize("version", ALL)
def test_recorded_length_must_match(version):
    """ "If multiple requests include indicators, their indicated values MUST match" (-06
    §4.1.3; -02 §6 "If the server does have a previous record, that value MUST match")."""
    interop = row(version)
    ietf.check_recorded_length(interop, 10, 10)
    ietf.check_recorded_length(interop, None, 10)
    ietf.check_recorded_length(interop, 10, None)
    with pytest.raises(IetfError) as info:
        ietf.check_recorded_length(interop, 10, 11)
    assert info.value.status == 400 and info.value.problem == ietf.INCONSISTENT_LENGTH


COMPLETED = [
    # version, content_length, complete, offset matches -> (status or None, type or None)
    *[(v, n, True, True, (400, None)) for v in (3, 4, 5) for n in (0, 5)],  # undefined: as v6
    (6, 0, True, True, (400, "completed-upload")),  # -04 §6 "MUST respond with a 400"
    (6, 5, False, True, (400, "completed-upload")),
    (7, 0, True, True, (400, "completed-upload")),  # -06 §4.4.2 "MUST reject"; §6.2 example
    (7, 5, False, False, (400, "completed-upload")),
    (8, 0, True, True, (400, "completed-upload")),  # -09 reject; -10 zero-length: type
    (8, 5, True, True, (400, "inconsistent-upload-length")),  # -10 §4.4.2 MUST
    (8, None, True, True, (400, "inconsistent-upload-length")),
    (9, 0, True, True, None),  # v9* §4.4.2 "can choose to replay the final response"
    (9, 0, False, True, (400, "about:blank")),  # not a valid completing request
    (9, 0, True, False, (400, "about:blank")),
    (9, 5, True, True, (400, "inconsistent-upload-length")),
]


@pytest.mark.parametrize(("version", "content_length", "complete", "matches", "answer"), COMPLETED)
def test_append_to_a_completed_upload(version, content_length, complete, matches, answer):
    """One answer per version to an append after completion (P7); the response carries the
    offset, and completeness says complete in 3-6 but false from v7, where "any response …
    MUST include the Upload-Complete header field with a false value" (-06 §4.4.2)."""
    interop = row(version)
    error = ietf.completed_upload(
        interop,
        offset=100,
        provided_offset=100 if matches else 50,
        content_length=content_length,
        complete=complete,
    )
    if answer is None:
        assert error is None
        return
    assert error is not None
    status, headers, _, document = rendered(error, version)
    assert status == answer[0]
    assert headers["Upload-Offset"] == "100"
    assert headers[interop.complete_field] == interop.complete_value(version <= 6)
    if document is None:
        assert answer[1] is None and version < 6
    else:
        expected = answer[1] if answer[1] == "about:blank" else URI + str(answer[1])
        assert document["type"] == expected


@pytest.mark.parametrize("version", ALL)
def test_bad_request_rendering(version):
    """Generic 400s: text for 3-5, which define no problem details (P6); an about:blank
    problem document (RFC 9457 §4.2.1) from v6."""
    error = ietf.bad_request("nope")
    status, headers, body, document = rendered(error, version)
    assert status == 400
    if version < 6:
        assert headers == {"Content-Type": "text/plain; charset=utf-8"} and body == b"nope\n"
    else:
        assert headers == {"Content-Type": ietf.PROBLEM_JSON}
        assert document == {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": "nope",
        }


# --- Representation metadata ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "filetype"),
    [
        ("image/png", "image/png"),
        ("IMAGE/PNG; charset=x", "image/png"),
        (ietf.PARTIAL_UPLOAD, None),  # P11
        ("application/partial-upload; a=b", None),
        ("application/offset+octet-stream", None),
        ("not a type", None),
        ("", None),
        (None, None),
    ],
)
def test_content_type_filetype(value, filetype):
    """ "The Content-Type header field indicates the media type of the representation" (-06
    §4.2.1; draft-01 §4)."""
    assert ietf.content_type_filetype(value) == filetype


@pytest.mark.parametrize(
    ("value", "filename"),
    [
        # RFC 6266 §5 examples
        ("Attachment; filename=example.html", "example.html"),
        ('INLINE; FILENAME= "an example.html"', "an example.html"),
        ("attachment; filename*= UTF-8''%e2%82%ac%20rates", "€ rates"),
        ("attachment; filename=\"EURO rates\"; filename*=utf-8''%e2%82%ac%20rates", "€ rates"),
        # quoted-pair escapes (RFC 9110 §5.6.4)
        ('inline; filename="a \\"quoted\\" name.txt"', 'a "quoted" name.txt'),
        # RFC 8187 ISO-8859-1 with a language tag
        ("attachment; filename*=iso-8859-1'en'%A3%20rates", "£ rates"),
        # unusable filename* falls back to filename (RFC 6266 §4.3)
        ("attachment; filename=a.txt; filename*=koi8-r''%C1", "a.txt"),
        ("attachment; filename=a.txt; filename*=utf-8''%FF", "a.txt"),
        ("attachment; filename=a.txt; filename*=utf-8''%E2%82", "a.txt"),
        # only the last path segment (RFC 6266 §4.3), no control characters (-08 §12)
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="C:\\\\dir\\\\x.txt"', "x.txt"),
        ("attachment; filename*=utf-8''a%0Ab%00.txt", "ab.txt"),
        # raw UTF-8 arrives from the HTTP layer as Latin-1 text
        ('inline; filename="' + "résumé.pdf".encode().decode("latin-1") + '"', "résumé.pdf"),
        ("inline; filename=data.csv;", "data.csv"),
        # malformed or unusable: ignored
        ("attachment; filename", None),
        ("; filename=a", None),
        ("attachment filename=a", None),
        ("attachment; filename=a; filename=b", None),
        ('attachment; filename="unterminated', None),
        ("attachment; filename=..", None),
        ("attachment", None),
        ('inline; filename="' + "x" * 1025 + '"', None),
    ],
)
def test_content_disposition_filename(value, filename):
    """ "The Content-Disposition header field can be used to transmit a filename" (-06 §4.2.1;
    -01 §4 "filename, filename* or boundary"), parsed as RFC 6266 with RFC 8187 decoding."""
    assert ietf.disposition_filename(value) == filename


@given(st.text(max_size=80))
def test_content_disposition_never_crashes(value):
    name = ietf.disposition_filename(value)
    assert name is None or ("/" not in name and "\\" not in name and name.strip() == name)


def test_representation_metadata_merges_tus_metadata():
    """tus-js-client sends tus Upload-Metadata in IETF mode (P11): its keys are kept, the
    draft's own headers win for filetype/filename, and invalid metadata is ignored (servers
    "MAY ignore it", draft-01 §4)."""
    headers = {
        "Upload-Metadata": "filename bm90ZXMudHh0,filetype dGV4dC9wbGFpbg==,owner YWxpY2U=",
        "Content-Type": ietf.PARTIAL_UPLOAD,
    }
    assert ietf.representation_metadata(headers) == {
        "filename": "notes.txt",
        "filetype": "text/plain",
        "owner": "alice",
    }
    headers["Content-Disposition"] = "inline; filename=report.pdf"
    headers["Content-Type"] = "application/pdf"
    assert ietf.representation_metadata(headers) == {
        "filename": "report.pdf",
        "filetype": "application/pdf",
        "owner": "alice",
    }
    assert ietf.representation_metadata({"Upload-Metadata": "bad key!!"}) == {}
    assert ietf.representation_metadata({}) == {}
