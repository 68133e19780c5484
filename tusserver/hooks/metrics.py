"""Prometheus metrics of the hook system, on prometheus_client's default REGISTRY.

The /metrics endpoint (built elsewhere, multiprocess-aware) exports them; counters and
histograms work unchanged in multiprocess mode.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INVOCATIONS = Counter(
    "tusserver_hook_invocations",
    "Hook invocations by event, hook kind and outcome (ok, rejected, error, timeout).",
    ["event", "kind", "outcome"],
)
DURATION = Histogram(
    "tusserver_hook_duration_seconds",
    "Time a hook took to answer, by event and hook kind.",
    ["event", "kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DELIVERIES = Counter(
    "tusserver_hook_deliveries",
    "Durable (post-finish) hook deliveries by final outcome: delivered, retried, gave_up.",
    ["event", "kind", "outcome"],
)
