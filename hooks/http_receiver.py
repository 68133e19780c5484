#!/usr/bin/env python3
"""Example HTTP hook receiver for `tusserver --hooks-http` (and tusd's -hooks-http).

Run:  hooks/http_receiver.py --port 8081
      tusserver --hooks-http http://127.0.0.1:8081/hooks \
                --hooks-enabled-events pre-create,post-create,post-finish,post-terminate

Every hook request (tusd's JSON schema) is logged as one line on stdout. pre-create applies
the same rules as hooks/pre-create (HOOK_ALLOWED_EXTENSIONS, HOOK_MAX_SIZE); every other event
gets an empty answer. Python 3 standard library only.
"""

import argparse
import contextlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1024 * 1024


def pre_create(upload):
    """tusd hook response for pre-create: a rejection, or {} to accept."""
    metadata = upload.get("MetaData") or {}
    filename = metadata.get("filename") or metadata.get("name") or ""
    allowed = [
        e.strip().lower()
        for e in os.environ.get("HOOK_ALLOWED_EXTENSIONS", "").split(",")
        if e.strip()
    ]
    allowed = [e if e.startswith(".") else "." + e for e in allowed]
    if allowed and not filename.lower().endswith(tuple(allowed)):
        return rejection(400, f"file type not allowed; allowed: {', '.join(allowed)}")
    max_size = int(os.environ.get("HOOK_MAX_SIZE") or 0)
    if max_size and not upload.get("SizeIsDeferred") and int(upload.get("Size") or 0) > max_size:
        return rejection(413, f"upload is larger than {max_size} bytes")
    return {}


def rejection(status, message):
    return {
        "RejectUpload": True,
        "HTTPResponse": {
            "StatusCode": status,
            "Body": json.dumps({"error": message}),
            "Header": {"Content-Type": "application/json"},
        },
    }


class HookHandler(BaseHTTPRequestHandler):
    server_version = "tus-hook-receiver/1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        try:
            request = json.loads(self.rfile.read(length))
            hook_type = request["Type"]
            upload = request["Event"]["Upload"]
        except (ValueError, KeyError, TypeError):
            self.send_error(400, "not a tusd hook request")
            return
        print(
            json.dumps({"type": hook_type, "id": upload.get("ID"), "offset": upload.get("Offset")}),
            flush=True,
        )
        answer = pre_create(upload) if hook_type == "pre-create" else {}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # keep stdout for the event lines
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), HookHandler)
    print(f"listening on http://{args.host}:{server.server_port}/", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
