"""Text encoding detection shared by the `validate` and `csv` plugins.

Both plugins see the same byte stream; they report the same encoding because both ask one
`EncodingSniffer`, whose answer depends only on the bytes, never on how they were chunked.

The rule: a BOM at byte 0 means utf-8-sig; a file without any non-ASCII byte is ascii;
otherwise the WINDOW bytes starting at the first non-ASCII byte decide: if they hold at least
one valid multi-byte UTF-8 character the file is utf-8 (a UTF-8 file with a few broken bytes
stays utf-8, so the broken lines can be reported), else latin-1 (Latin-1 exports practically
never form valid UTF-8 sequences). Looking from the first non-ASCII byte instead of at the
file's head means a Latin-1 file whose first megabytes are ASCII is still recognised.

The decision can need bytes after the chunk holding the first non-ASCII byte: `waiting` tells
a streaming consumer (the CSV scanner) to hold its input until `encoding` is known.
"""

from __future__ import annotations

import re

BOM = b"\xef\xbb\xbf"
WINDOW = 64 * 1024
_NON_ASCII = re.compile(rb"[\x80-\xff]")


class EncodingSniffer:
    """Streaming detection: update(chunk)* then finish() -> ascii|utf-8|utf-8-sig|latin-1."""

    def __init__(self) -> None:
        self.encoding: str | None = None  # known as soon as the window is complete
        self._pos = 0  # bytes seen
        self._start = -1  # offset of the first non-ASCII byte
        self._window = bytearray()

    @property
    def waiting(self) -> bool:
        """A non-ASCII byte was seen but the rest of its window has not arrived yet."""
        return self.encoding is None and self._start >= 0

    def update(self, chunk: bytes) -> None:
        if self.encoding is not None or not chunk:
            return
        if self._start < 0:
            if chunk.isascii():
                self._pos += len(chunk)
                return
            match = _NON_ASCII.search(chunk)
            assert match is not None
            self._start = self._pos + match.start()
            self._window += chunk[match.start() : match.start() + WINDOW]
        else:
            self._window += chunk[: WINDOW - len(self._window)]
        self._pos += len(chunk)
        if len(self._window) >= WINDOW:
            self._decide()

    def finish(self) -> str:
        """End of file: the answer (a short window, or none at all, is final now)."""
        if self.encoding is None:
            if self._start < 0:
                self.encoding = "ascii"
            else:
                self._decide()
        assert self.encoding is not None
        return self.encoding

    def _decide(self) -> None:
        window, self._window = bytes(self._window), bytearray()
        if self._start == 0 and window.startswith(BOM):
            self.encoding = "utf-8-sig"
        elif not window.decode("utf-8", "ignore").isascii():
            self.encoding = "utf-8"
        else:
            self.encoding = "latin-1"


def detect_encoding(data: bytes) -> str:
    """The encoding of a whole file in memory (tests, small inputs)."""
    sniffer = EncodingSniffer()
    sniffer.update(data)
    return sniffer.finish()
