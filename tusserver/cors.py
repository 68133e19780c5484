"""Cross-Origin Resource Sharing, the way tusd does it.

A small ASGI middleware rather than Starlette's CORSMiddleware, because tusd's rules differ
from it in ways browsers can see:

- an Origin that does not match `--cors-allow-origin` gets 403 (ERR_ORIGIN_NOT_ALLOWED in
  tusd) with no Access-Control-* header at all, for preflights and actual requests alike;
  Starlette answers such a preflight 400 *with* the permissive allow-lists;
- a preflight is answered with fixed lists (tus set + `--cors-allow-headers`) and the browser
  decides; Starlette 400s a preflight that names any header it does not know (`x-api-key`);
- an allowed origin is always echoed, never `*`, so `--cors-allow-credentials` is safe to
  combine with the default origin regex `.*`.
- the dashboard and admin API (`exempt`) never get CORS headers. The upload page's own
  requests are not exempt: a "same origin" judged by the Host header would let a
  DNS-rebinding page past the allow-list, so a strict `--cors-allow-origin` must name the
  server's own origin for the page to work.

Everything but the echoed origin is computed once, at startup: the regex is compiled in
`cors_middleware` (a bad `--cors-allow-origin` fails there, not on the first request).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusserver.config import Settings
from tusserver.ietf import RESPONSE_HEADERS as DRAFT_HEADERS

Headers = list[tuple[bytes, bytes]]

# Every header a tus client sends or reads: allowed in requests and exposed in responses
# (browsers hide response headers that are not exposed, Location and Upload-Offset included).
TUS_HEADERS = [
    "Authorization",
    "Content-Type",
    "Location",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Checksum-Algorithm",
    "Upload-Checksum",
    "Upload-Concat",
    "Upload-Defer-Length",
    "Upload-Expires",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Offset",
    "X-HTTP-Method-Override",
    "X-Requested-With",
    "X-Request-ID",
    "Content-Disposition",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    # tusserver's own: the processing error report says whether it is complete yet
    "X-Report-Complete",
    "X-Processing-Status",
]
# and the IETF resumable-upload draft's (tusserver.draft: Upload-Complete, Upload-Limit, ...)
TUS_HEADERS += [name for name in DRAFT_HEADERS if name not in TUS_HEADERS]
# tusd's default list: every method a tus client uses (disabled ones answer 405 themselves).
ALLOW_METHODS = "POST, HEAD, PATCH, OPTIONS, GET, DELETE"


def cors_middleware(
    settings: Settings, exempt: Callable[[Scope], bool] = lambda scope: False
) -> list[Middleware]:
    """The CORS layer for create_app, or none with --disable-cors (a proxy does CORS then:
    no Access-Control-* header, no Vary, and preflights reach the tus OPTIONS handler).
    Requests that `exempt` names (the admin pages) never get CORS headers: browsers then
    keep other origins from reading them."""
    if settings.disable_cors:
        return []
    policy = CorsPolicy(settings)
    return [Middleware(CorsMiddleware, policy=policy, exempt=exempt)]


def _join(names: Iterable[str]) -> bytes:
    """One header value from a list of names, duplicates (any case) dropped, order kept."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return ", ".join(seen.values()).encode("latin-1")


class CorsPolicy:
    """The settings turned into ready-made header lines, once."""

    def __init__(self, settings: Settings):
        self.allow_origin = re.compile(settings.cors_allow_origin)
        credentials = [(b"access-control-allow-credentials", b"true")]
        common = credentials if settings.cors_allow_credentials else []
        self.preflight: Headers = [
            *common,
            (b"access-control-allow-methods", ALLOW_METHODS.encode()),
            (b"access-control-allow-headers", _join([*TUS_HEADERS, *settings.cors_allow_headers])),
            (b"access-control-max-age", str(int(settings.cors_max_age)).encode()),
        ]
        self.actual: Headers = [
            *common,
            (
                b"access-control-expose-headers",
                _join([*TUS_HEADERS, *settings.cors_expose_headers]),
            ),
        ]

    def allows(self, origin: bytes) -> bool:
        """Whole-string match: `https://app\\.example` must not admit
        `https://app.example.evil` (tusd searches; a full match is the safe reading)."""
        return self.allow_origin.fullmatch(origin.decode("latin-1")) is not None


class CorsMiddleware:
    """Adds CORS headers, answers preflights and refuses disallowed origins (see module doc).

    Requests without Origin (every non-browser client) stay lean on purpose: one scan of the
    raw request headers, no parsing, and the response only gains "Vary: Origin" (it would
    differ with an Origin, and caches must know). Starlette's middleware parsed and wrapped
    headers on every request, which measured a few percent of small-upload CPU.
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: CorsPolicy,
        exempt: Callable[[Scope], bool] = lambda scope: False,
    ):
        self.app = app
        self.policy = policy
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        origin = preflight = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = origin if origin is not None else value  # the first one, as Starlette
            elif key == b"access-control-request-method":
                preflight = value
        extra: Headers = []
        if origin is not None:
            if not self.policy.allows(origin):
                refusal = PlainTextResponse("request origin is not allowed\n", 403)
                await self.answer(refusal, [], scope, receive, send)
                return
            allowed = (b"access-control-allow-origin", origin)
            if scope["method"] == "OPTIONS" and preflight is not None:
                preflight_ok = Response(status_code=200)  # 200, as tusd: some browsers refuse 204
                await self.answer(
                    preflight_ok, [allowed, *self.policy.preflight], scope, receive, send
                )
                return
            extra = [allowed, *self.policy.actual]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_headers(message.get("headers", []), extra)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    async def answer(
        response: Response, extra: Headers, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer without the app (preflights and refusals), with `extra` and Vary added."""
        response.raw_headers = with_headers(response.raw_headers, extra)
        await response(scope, receive, send)


def with_headers(headers: Sequence[tuple[bytes, bytes]], extra: Headers) -> Headers:
    """`headers` + `extra` + Origin in Vary. An app-set header `extra` also names is replaced
    (one Access-Control-Allow-Origin, never two); existing Vary values are kept, Origin is
    added once (not at all after `*`). Header names are lowercase, as Starlette sends them."""
    if not extra and all(name != b"vary" for name, _ in headers):
        return [*headers, (b"vary", b"Origin")]  # the usual request: no Origin, no Vary yet
    names = {name for name, _ in extra}
    result: Headers = []
    vary: list[bytes] = []
    for name, value in headers:
        if name == b"vary":
            vary.append(value)
        elif name not in names:
            result.append((name, value))
    tokens = {token.strip().lower() for value in vary for token in value.split(b",")}
    if not tokens & {b"origin", b"*"}:
        vary.append(b"Origin")
    result.extend(extra)
    result.append((b"vary", b", ".join(vary)))
    return result
