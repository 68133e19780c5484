"""Sign part uploads without reading the part again.

SigV4 signs a hash of the body. botocore computes it by reading the whole body (a second
pass over every part, besides sending it) whenever it signs the payload: always over
plain http (MinIO or Ceph on a private network), and over https when no checksum header
lets it skip that. The store hashes each part while staging it instead (the SHA-256 is the
part's checksum with --s3-checksum sha256, and computed beside the checksum where a payload
hash will be needed), and hands the hash to the signer with the call: the `PAYLOAD_SHA256`
argument of UploadPart and PutObject, moved into the request's context before botocore
looks at the arguments. The body is then read once, to be sent.

Over https with an x-amz-checksum-* header the payload is sent unsigned
(`UNSIGNED-PAYLOAD`), as botocore itself does for streaming bodies with a checksum it
computed (it only recognises its own): TLS and the checksum protect the bytes.

Everything else is botocore's S3 SigV4 signer unchanged, chosen as botocore chooses it
(only its plain "s3v4" answer is swapped for this subclass).
"""

from __future__ import annotations

from typing import Any

import botocore.auth
import botocore.handlers

SIGNER = "tusserver-s3v4"
OPERATIONS = ("UploadPart", "PutObject")
PAYLOAD_SHA256 = "TusserverPayloadSHA256"  # hex SHA-256 of the body, for the signer only
PAYLOAD_CONTEXT = "tusserver_payload_sha256"
CHECKSUM_HEADERS = (
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "Content-MD5",
)


def signs_payload(endpoint: str, checksum_kind: str) -> bool:
    """Whether requests to `endpoint` (AWS's https one when empty) with part checksums of
    `checksum_kind` will have their payload signed, so the store should compute the
    payload's SHA-256 while staging (see the module docstring)."""
    https = not endpoint or endpoint.lower().startswith("https:")
    return not (https and checksum_kind in ("crc32", "md5", "sha256"))


class PrecomputedPayloadAuth(botocore.auth.S3SigV4Auth):  # type: ignore[misc]
    """S3 SigV4 that signs the payload hash handed over with the call, if there is one."""

    def payload(self, request: Any) -> str:
        precomputed = request.context.get(PAYLOAD_CONTEXT)
        if (
            precomputed
            and not self._is_streaming_checksum_payload(request)
            and self._should_sha256_sign_payload(request)
        ):
            return str(precomputed)
        result: str = super().payload(request)
        return result

    def _should_sha256_sign_payload(self, request: Any) -> bool:
        s3_config = getattr(request.context.get("client_config"), "s3", None) or {}
        if (
            s3_config.get("payload_signing_enabled") is None
            and request.url.startswith("https")
            and request.context.get("has_streaming_input", False)
            and any(header in request.headers for header in CHECKSUM_HEADERS)
        ):
            return False
        result: bool = super()._should_sha256_sign_payload(request)
        return result


def _take_payload_hash(params: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
    """Move the PAYLOAD_SHA256 argument into the request's context (before botocore
    validates the arguments, which would refuse it)."""
    digest = params.pop(PAYLOAD_SHA256, None)
    if digest:
        context[PAYLOAD_CONTEXT] = digest


def _choose_signer(**kwargs: Any) -> Any:
    """botocore's choice for the operation (its operation-specific handler, else the
    client's signature version), with its S3 SigV4 signer swapped for ours."""
    chosen = botocore.handlers.set_operation_specific_signer(**kwargs)
    if (chosen or kwargs.get("signature_version")) == "s3v4":
        return SIGNER
    return chosen


def install_precomputed_payload_hash(client: Any) -> None:
    """Let the client's UploadPart and PutObject calls take PAYLOAD_SHA256."""
    botocore.auth.AUTH_TYPE_MAPS.setdefault(SIGNER, PrecomputedPayloadAuth)
    for operation in OPERATIONS:
        client.meta.events.register(f"provide-client-params.s3.{operation}", _take_payload_hash)
        client.meta.events.register(f"choose-signer.s3.{operation}", _choose_signer)
