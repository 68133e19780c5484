"""The `validate` plugin: size, digests, sniffed content type, text encoding, configured rules.

Everything comes from the bytes, never from the client's file name or declared type (those are
only reported next to the sniffed type). One pass: digests see every chunk, the content type is
sniffed from the first 8 KiB, the encoding comes from the EncodingSniffer the csv plugin uses
too (so both report the same name), UTF-8 validity is tracked with an incremental decoder until
the first invalid byte, and NUL bytes are counted (a text file with NUL bytes is refused).
"""

from __future__ import annotations

import csv
import hashlib
import io
from fnmatch import fnmatch
from typing import Any, ClassVar

from tusserver.processing.encoding import BOM, EncodingSniffer
from tusserver.processing.plugin import Context, Plugin

SNIFF = 8192
MAGIC: list[tuple[bytes, str]] = [
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"(\xb5/\xfd", "application/zstd"),
    (b"PAR1", "application/vnd.apache.parquet"),
    (b"\x7fELF", "application/x-executable"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
]


def sniff_type(head: bytes) -> str:
    """MIME type from the first bytes: magic numbers, then text heuristics."""
    for magic, mime in MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if not head:
        return "application/x-empty"
    if b"\0" in head:
        return "application/octet-stream"
    text = head.removeprefix(BOM)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(text) - 3:  # invalid inside, not a character cut at the end
            decoded = text.decode("latin-1")
        else:
            decoded = text[: exc.start].decode("utf-8")
    controls = sum(1 for ch in decoded if ord(ch) < 32 and ch not in "\t\r\n\f")
    if controls > len(decoded) // 100:
        return "application/octet-stream"
    stripped = decoded.lstrip()
    if stripped[:1] in ("{", "["):
        return "application/json"
    if stripped.startswith("<?xml") or stripped.startswith("<"):
        return "text/html" if "<html" in stripped[:512].lower() else "application/xml"
    if _looks_like_csv(decoded):
        return "text/csv"
    return "text/plain"


def _looks_like_csv(text: str) -> bool:
    """Most rows (quotes respected) split into the same number (> 1) of fields on a delimiter."""
    if len(text) >= SNIFF - 3 and "\n" in text:
        text = text[: text.rindex("\n") + 1]  # drop the probably cut last line
    for delim in (",", ";", "\t", "|"):
        try:
            rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delim)]
        except csv.Error:
            continue
        widths = [len(row) for row in rows if row][:50]
        if not widths:
            return False
        common = max(set(widths), key=widths.count)
        if common > 1 and widths.count(common) >= max(1, int(0.8 * len(widths))):
            return True
    return False


def _sequence_length(lead: int) -> int:
    """Bytes in the UTF-8 sequence a lead byte starts (1 for ASCII and invalid leads)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 1


class Utf8Checker:
    """Streaming UTF-8 validity with the first error's byte offset.

    One C decode per chunk (about twice the speed of an incremental decoder); a character cut
    by a chunk boundary (at most 3 bytes) is carried over and checked with the next chunk.
    """

    def __init__(self) -> None:
        self.ok = True
        self.error_at: int | None = None
        self._pos = 0  # bytes seen
        self._tail = b""  # start of a character cut by the last chunk boundary
        self._tail_at = 0

    def update(self, chunk: bytes) -> None:
        pos = self._pos
        self._pos += len(chunk)
        if not self.ok or not chunk:
            return
        start = 0
        if self._tail:
            need = _sequence_length(self._tail[0]) - len(self._tail)
            if len(chunk) < need:
                self._tail += chunk  # still incomplete; checked once complete
                return
            piece, self._tail = self._tail + chunk[:need], b""
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._fail(self._tail_at + exc.start)
                return
            start = need
        elif chunk.isascii():
            return
        end = len(chunk)
        i = end - 1
        while i > start and end - i < 4 and chunk[i] & 0xC0 == 0x80:
            i -= 1
        if i >= start and chunk[i] >= 0xC0 and i + _sequence_length(chunk[i]) > end:
            end = i  # the last character continues in the next chunk
        try:
            str(memoryview(chunk)[start:end], "utf-8")
        except UnicodeDecodeError as exc:
            self._fail(pos + start + exc.start)
            return
        if end < len(chunk):
            self._tail, self._tail_at = chunk[end:], pos + end

    def finish(self) -> None:
        if self.ok and self._tail:
            self._fail(self._tail_at)  # the file ends inside a character

    def _fail(self, offset: int) -> None:
        self.ok = False
        self.error_at = offset
        self._tail = b""


class ValidatePlugin(Plugin):
    """Checks a finished upload against the configured rules; fails the job on violations."""

    name: ClassVar[str] = "validate"

    def start(self, ctx: Context) -> None:
        super().start(ctx)
        names = ["sha256", *ctx.settings.validate_digests]
        self.hashers = {n: hashlib.new(n) for n in dict.fromkeys(x.lower() for x in names)}
        self.head = bytearray()
        self.size = 0
        self.nul_count = 0
        self.first_nul: int | None = None
        self.utf8 = Utf8Checker()
        self.sniffer = EncodingSniffer()

    def feed(self, chunk: bytes) -> None:
        for hasher in self.hashers.values():
            hasher.update(chunk)
        if len(self.head) < SNIFF:
            self.head += chunk[: SNIFF - len(self.head)]
        nul = chunk.find(b"\0")
        if nul >= 0:
            if self.first_nul is None:
                self.first_nul = self.size + nul
            self.nul_count += chunk.count(b"\0")
        self.utf8.update(chunk)
        self.sniffer.update(chunk)
        self.size += len(chunk)

    def finish(self) -> dict[str, Any]:
        self.utf8.finish()
        settings = self.ctx.settings
        mime = sniff_type(bytes(self.head))
        text = mime.startswith("text/") or mime in ("application/json", "application/xml")
        encoding = self.sniffer.finish() if text else None
        # a file detected as UTF-8 may still hold broken bytes (reported, like csv reports the
        # lines); any byte is valid Latin-1
        invalid_at = self.utf8.error_at if encoding in ("utf-8", "utf-8-sig") else None
        violations: list[str] = []
        if settings.validate_max_size and self.size > settings.validate_max_size:
            violations.append(
                f"file is {self.size} bytes, more than the {settings.validate_max_size} allowed"
            )
        allowed = settings.validate_allowed_types
        if allowed and not any(fnmatch(mime, pattern) for pattern in allowed):
            violations.append(f"content type {mime} is not allowed ({', '.join(allowed)})")
        if text and self.nul_count:
            violations.append(f"text file contains NUL bytes (first at byte {self.first_nul})")
        encodings = [e.lower() for e in settings.validate_encodings]
        ascii_ok = encoding == "ascii" and {"utf-8", "utf-8-sig", "latin-1"} & set(encodings)
        if text and encodings and encoding not in encodings and not ascii_ok:
            violations.append(f"text encoding {encoding} is not allowed")
        elif text and encodings and invalid_at is not None and "latin-1" not in encodings:
            violations.append(f"text is not valid {encoding} (first invalid byte at {invalid_at})")
        meta = self.ctx.metadata
        result: dict[str, Any] = {
            "size": self.size,
            "digests": {n: h.hexdigest() for n, h in self.hashers.items()},
            "content_type": mime,
            "declared_type": meta.get("filetype") or meta.get("content-type") or None,
            "filename": meta.get("filename") or meta.get("name") or None,
            "encoding": encoding,
            "encoding_valid": invalid_at is None if text else None,
            "first_invalid_byte": invalid_at,
            "nul_bytes": self.nul_count,
            "violations": violations,
        }
        if violations:
            result["status"] = "failed"
            result["error"] = "; ".join(violations)
        return result
