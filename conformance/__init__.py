"""A server-agnostic tus 1.0.0 conformance suite, with the IETF resumable-upload draft.

    python -m conformance http://127.0.0.1:8080/files/
    python -m conformance http://127.0.0.1:8080/files/ --only ietf-draft --ietf-versions 3,5,6
    pytest conformance --tus-url http://127.0.0.1:8080/files/ [--ietf-versions 3,5,6]

One check per server-side MUST/SHOULD of protocol.md, grouped by extension; extensions the
server does not advertise in Tus-Extension are skipped. The "ietf-draft" group
(ietf_checks.py) checks draft-ietf-httpbis-resumable-upload on the same URL, once per interop
version (3-9) the server is found to answer, or the ones --ietf-versions names; a server that
answers none has the group skipped. Only plain HTTP is used (a raw socket where 1xx responses
matter: draft_client.py).
"""

from conformance.runner import CHECKS, Result, Target, format_table, run_suite, summary

__all__ = ["CHECKS", "Result", "Target", "format_table", "run_suite", "summary"]
