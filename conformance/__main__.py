"""`python -m conformance URL`: check a tus server, print per-check lines and a summary table.

The "ietf-draft" group checks the IETF resumable-upload draft on the same URL, for the interop
versions the server is found to answer (`--ietf-versions 3,5,6` picks them); its checks report
every version's outcome, and a second table sums them up per version. A server that answers
no interop version has the group skipped (exit status 0).

Progress (one line per check, the versions each group checks, and the cleanup) goes to stderr
so stdout stays a clean report for redirection. Exit status: 0 when nothing failed, 1
otherwise (2 for usage errors or an unreachable server).
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx

from conformance.runner import (
    format_details,
    format_table,
    format_versions,
    run_suite,
    summary,
    version_summary,
)

KNOWN_INTEROP_VERSIONS = range(3, 10)


def interop_versions(value: str) -> list[int]:
    """`3,5,6` -> [3, 5, 6] (argparse type of --ietf-versions)."""
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {value!r}"
        ) from None
    unknown = [n for n in numbers if n not in KNOWN_INTEROP_VERSIONS]
    if not numbers or unknown:
        raise argparse.ArgumentTypeError(
            f"interop versions are {KNOWN_INTEROP_VERSIONS[0]}-{KNOWN_INTEROP_VERSIONS[-1]}"
            f" (got {value!r})"
        )
    return numbers


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
    parser.add_argument(
        "--only",
        action="append",
        help="extension, group (ietf-draft) or check name (repeatable)",
    )
    parser.add_argument(
        "--ietf-versions",
        type=interop_versions,
        metavar="N,N",
        help="interop versions of the IETF draft to check, e.g. 3,5,6 (default: the ones the "
        "server answers, probed with a creation per version from 3 to 9)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    args = parser.parse_args(argv)
    try:
        progress = None if args.quiet else sys.stderr
        results = run_suite(
            args.url,
            args.only,
            args.timeout,
            keep=args.keep,
            progress=progress,
            ietf_versions=args.ietf_versions,
        )
    except httpx.HTTPError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    details = format_details(results, args.verbose)
    if details:
        print(details + "\n")
    print(format_table(results, markdown=args.markdown))
    per_version = format_versions(results, markdown=args.markdown)
    if per_version:
        print("\n" + per_version)
    if args.json:
        rows = [
            {
                "name": r.check.name,
                "extension": r.check.extension,
                "level": r.check.level,
                "section": r.check.section,
                "outcome": r.outcome,
                "detail": r.detail,
                **(
                    {
                        "versions": {
                            str(n): {"outcome": outcome, "detail": detail}
                            for n, (outcome, detail) in sorted(r.versions.items())
                        }
                    }
                    if r.versions
                    else {}
                ),
            }
            for r in results
        ]
        report = {
            "url": args.url,
            "summary": summary(results),
            "versions": {str(n): counts for n, counts in version_summary(results).items()},
            "checks": rows,
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 1 if any(r.outcome == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
