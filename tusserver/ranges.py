"""HTTP Range requests (RFC 9110 §14) for downloads: one byte range or the whole body.

Only a single range is served. The RFC lets a server ignore a Range header (§14.2), so one it
cannot parse, with another unit, or asking for several ranges gets the whole body (200)
rather than an error: clients then still get their bytes, just more of them.
"""

from __future__ import annotations

import re

_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")
# Larger than any upload; longer digit strings all mean "past the end" (and Python refuses to
# convert strings of more than 4300 digits, which a header could easily hold).
_HUGE = 10**20


class Unsatisfiable(Exception):
    """A valid single range that selects no byte of the body: 416 with `bytes */size`."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The range to send as (start, end) with end exclusive, or None for the whole body.

    Raises Unsatisfiable when the one range starts at or past the end (§14.1.2).
    """
    if header is None:
        return None
    unit, equals, specs = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    # a list may carry empty elements, which a recipient ignores (§5.6.1)
    elements = [element.strip() for element in specs.split(",") if element.strip()]
    if len(elements) != 1:
        return None
    return _one_range(elements[0], size)


def _one_range(spec: str, size: int) -> tuple[int, int] | None:
    """One range-spec against a body of `size` bytes (None: not a valid int or suffix range)."""
    if match := _INT_RANGE.fullmatch(spec):
        first = _number(match[1])
        last = _number(match[2]) if match[2] else None
        if last is not None and last < first:
            return None  # invalid (§14.1.1), so the header is ignored
        if first >= size:
            raise Unsatisfiable
        return first, size if last is None else min(last + 1, size)
    if match := _SUFFIX_RANGE.fullmatch(spec):
        length = _number(match[1])
        if length == 0:
            raise Unsatisfiable
        if size == 0:
            return None  # the whole (empty) body: no Content-Range can describe zero bytes
        return max(size - length, 0), size
    return None


def _number(digits: str) -> int:
    """The value of a digit string of any length (values past _HUGE are all alike)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 20 else _HUGE
