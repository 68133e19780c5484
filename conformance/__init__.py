"""A server-agnostic tus 1.0.0 conformance suite.

    python -m conformance http://127.0.0.1:8080/files/
    pytest conformance --tus-url http://127.0.0.1:8080/files/

One check per server-side MUST/SHOULD of protocol.md, grouped by extension; extensions the
server does not advertise in Tus-Extension are skipped. Only plain HTTP is used.
"""

from conformance.runner import CHECKS, Result, Target, format_table, run_suite, summary

__all__ = ["CHECKS", "Result", "Target", "format_table", "run_suite", "summary"]
