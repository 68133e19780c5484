"""`python -m conformance URL`: check a tus server, print per-check lines and a summary table.

Exit status: 0 when nothing failed, 1 otherwise (2 for usage errors or an unreachable server).
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
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per check")
    parser.add_argument("--only", action="append", help="extension or check name (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    args = parser.parse_args(argv)
    try:
        results = run_suite(args.url, args.only, args.timeout)
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
