"""Checksum extension: per-chunk integrity checks, hashed while the body streams in.

A chunk is never buffered to be hashed: the hasher is a `transfer.Observer` that sees every
accepted body piece once, and the verdict comes after the body (`TusCore.receive(verify=...)`),
which cuts the file back to the chunk's start on a mismatch. The expected digest comes either
from the `Upload-Checksum` header or, with the checksum-trailer extension, from a trailer of a
chunked request; then the algorithm is unknown until the body has ended, so every supported
algorithm hashes the chunk (only for such requests).
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from tusserver.protocol import TusError, parse_checksum
from tusserver.transfer import Observer, Outcome

# Scope extension key under which tusserver.trailers exposes a request's trailer fields.
TRAILERS_EXTENSION = "tusserver.request_trailers"
CHECKSUM_MISMATCH = 460


class Hasher(Protocol):
    """What hashlib objects offer; Crc32 mimics it."""

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class Crc32:
    """CRC-32 (IEEE, as zlib and Go's hash/crc32) with a hashlib-like face; big-endian digest."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes, /) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


# Order = preference shown in Tus-Checksum-Algorithm; sha1 is the one the spec requires.
ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "md5": hashlib.md5,
    "crc32": Crc32,
}
DIGEST_SIZES = {name: len(factory().digest()) for name, factory in ALGORITHMS.items()}


def algorithm_header() -> str:
    """Value of Tus-Checksum-Algorithm (OPTIONS)."""
    return ",".join(ALGORITHMS)


def parse_upload_checksum(value: str) -> tuple[str, bytes]:
    """Upload-Checksum -> (algorithm, digest); 400 for unsupported algorithms or bad base64.

    Checksum: "400 Bad Request if the checksum algorithm is not supported by the server".
    A well-formed digest of the wrong length is not refused here: it is a checksum that
    cannot match, answered 460 by `ChunkCheck.verify` once the body has been read (an answer
    sent before the body reaches browsers as a network error, not as a status).
    """
    algorithm, digest = parse_checksum(value)
    if algorithm not in ALGORITHMS:
        raise TusError(400, f"unsupported checksum algorithm {algorithm!r}")
    return algorithm, digest


def announced_trailers(headers: Mapping[str, str]) -> set[str]:
    """Lower-cased field names the request announces in its Trailer header (RFC 7230 4.1.2)."""
    return {name.strip().lower() for name in headers.get("trailer", "").split(",") if name.strip()}


def request_trailers(scope: MutableMapping[str, Any]) -> list[tuple[bytes, bytes]] | None:
    """The trailer list our uvicorn protocol fills, or None when the server cannot see trailers."""
    extensions = scope.get("extensions") or {}
    trailers = extensions.get(TRAILERS_EXTENSION)
    return trailers if isinstance(trailers, list) else None


class ChunkCheck:
    """Verifies one chunk: observers to feed while streaming, `verify` after the body.

    Unverified bytes never count: the caller passes checkpoints=False, and any ending other
    than a complete body with a matching digest raises, so the core truncates the chunk away.
    """

    def __init__(self, hashers: dict[str, Hasher], expected: tuple[str, bytes] | None):
        self.hashers = hashers
        self.expected = expected
        self.trailers: list[tuple[bytes, bytes]] | None = None

    @property
    def observers(self) -> Sequence[Observer]:
        return list(self.hashers.values())

    def verify(self, outcome: Outcome) -> None:
        """Raise (so the chunk is discarded) unless the whole body matched its checksum."""
        if not outcome.complete:
            raise TusError(400, "request body incomplete; the checksummed chunk was discarded")
        expected = self.expected or self._from_trailer()
        algorithm, digest = expected
        hasher = self.hashers.get(algorithm)
        if hasher is None:  # a trailer named an algorithm the header-less path did not hash
            raise TusError(400, f"unsupported checksum algorithm {algorithm!r}")
        if len(digest) != DIGEST_SIZES[algorithm]:  # can never match: a mismatch all the same
            raise TusError(
                CHECKSUM_MISMATCH,
                f"Upload-Checksum has the wrong length for {algorithm}, so it cannot match",
            )
        if not hmac.compare_digest(hasher.digest(), digest):
            raise TusError(CHECKSUM_MISMATCH, "Upload-Checksum does not match the chunk")

    def _from_trailer(self) -> tuple[str, bytes]:
        for name, value in self.trailers or []:
            if name.lower() == b"upload-checksum":
                return parse_upload_checksum(value.decode("latin-1"))
        raise TusError(400, "announced Upload-Checksum trailer was not sent")


def chunk_check(headers: Mapping[str, str], scope: MutableMapping[str, Any]) -> ChunkCheck | None:
    """The check a PATCH (or creation-with-upload POST) asks for, or None without a checksum.

    Checked before any byte is read, so a bad header or algorithm never touches the upload.
    """
    value = headers.get("upload-checksum")
    if value is not None:
        algorithm, digest = parse_upload_checksum(value)
        return ChunkCheck({algorithm: ALGORITHMS[algorithm]()}, (algorithm, digest))
    if "upload-checksum" not in announced_trailers(headers):
        return None
    trailers = request_trailers(scope)
    if trailers is None:
        raise TusError(400, "this server cannot read request trailers; send Upload-Checksum")
    check = ChunkCheck({name: factory() for name, factory in ALGORITHMS.items()}, None)
    check.trailers = trailers
    return check
