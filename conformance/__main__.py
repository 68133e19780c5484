"""`python -m conformance URL`: check a tus server, print per-check lines and a summary table.

Progress (one line per check, and the cleanup) goes to stderr so stdout stays a clean report
for redirection. Exit status: 0 when nothing failed, 1 otherwise (2 for usage errors or an
unreachable server).
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx

from conformance.runner import format_details, format_table, run_suite, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance", description="tus 1.0.0 conformance suite for any server"
    )
    parser.add_argument("url", help="the server's upload creation URL, e.g. http://host/files/")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list passed checks too (failed and skipped ones are always listed)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines on stderr while running"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the uploads the checks create (default: DELETE them at the end when the "
        "server supports termination)",
    )
    parser.add_argument("--only", action="append", help="extension or check name (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    args = parser.parse_args(argv)
    try:
        progress = None if args.quiet else sys.stderr
        results = run_suite(args.url, args.only, args.timeout, keep=args.keep, progress=progress)
    except httpx.HTTPError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    details = format_details(results, args.verbose)
    if details:
        print(details + "\n")
    print(format_table(results, markdown=args.markdown))
    if args.json:
        rows = [
            {
                "name": r.check.name,
                "extension": r.check.extension,
                "level": r.check.level,
                "section": r.check.section,
                "outcome": r.outcome,
                "detail": r.detail,
            }
            for r in results
        ]
        with open(args.json, "w") as out:
            json.dump({"url": args.url, "summary": summary(results), "checks": rows}, out, indent=2)
    return 1 if any(r.outcome == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
