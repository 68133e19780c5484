"""HTTP hooks: POST the JSON hook request to --hooks-http, as tusd does.

Like tusd (pester client), network errors and 5xx answers are retried --hooks-http-retry times
with a constant --hooks-http-backoff pause; any other non-2xx answer is a failure. Selected
client request headers (--hooks-http-forward-headers) are copied onto the hook request. The
2xx body is parsed as a hook response (an empty body is an empty answer).

httpx (already the test client) is the transport: it brings HTTPS with certificate checks,
keep-alive pooling, chunked responses and proxies, which a home-grown asyncio client would
have to re-implement; it is imported only when an HTTP hook is configured.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from tusserver.hooks.model import (
    HookFailed,
    HookRequest,
    HookResponse,
    canonical_header,
    parse_response,
)
from tusserver.startup import redact  # the URL may carry a token (path too): never log it

log = logging.getLogger("tusserver.hooks")

MAX_BODY = 1024 * 1024


class HttpHooks:
    """Sends every enabled event to one endpoint."""

    kind = "http"

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        forward_headers: list[str],
    ):
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--hooks-http is not an http:// or https:// URL: {redact(endpoint)}")
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.forward_headers = forward_headers
        self._client: Any = None

    def handles(self, event: str) -> bool:
        return True

    def attempt_budget(self) -> float:
        """Worst-case seconds one invoke() may take (lease length for durable deliveries)."""
        return (self.retries + 1) * (self.timeout + self.backoff)

    def client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=self.timeout or None, follow_redirects=False, trust_env=True
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def headers_for(self, request: HookRequest) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        sent = request.event.http_request.header
        for name in self.forward_headers:
            values = sent.get(canonical_header(name))
            if values:
                headers[name] = ", ".join(values)
        return headers

    async def invoke(self, request: HookRequest) -> HookResponse:
        import httpx

        body = request.dumps().encode()
        headers = self.headers_for(request)
        last_error, outcome = "no attempt made", "error"
        for attempt in range(self.retries + 1):
            if attempt:
                await anyio.sleep(self.backoff)
            try:
                response = await self.client().post(self.endpoint, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                last_error = f"timeout: {exc!r}"
                outcome = "timeout"
                continue
            except httpx.HTTPError as exc:
                last_error = f"network error: {exc!r}"
                outcome = "error"
                continue
            if response.status_code >= 500:
                last_error = f"endpoint answered {response.status_code}"
                outcome = "error"
                continue
            if not 200 <= response.status_code < 300:
                raise HookFailed(
                    f"hook endpoint answered {response.status_code}: {response.text[:200]!r}"
                )
            if len(response.content) > MAX_BODY:
                raise HookFailed("hook endpoint answer is too large")
            return parse_response(response.content)
        raise HookFailed(
            f"hook endpoint {redact(self.endpoint)} failed after"
            f" {self.retries + 1} attempts: {last_error}",
            outcome,
        )
