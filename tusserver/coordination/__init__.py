"""Coordination: per-upload locks with release requests, and process liveness for leases.
The interface is in base.py; local.py (one host: flock) and postgres.py (advisory locks,
LISTEN/NOTIFY) implement it. Only tusserver.backends names an implementation."""

from tusserver.coordination.base import Liveness, Locker, ReleaseRequest

__all__ = ["Liveness", "Locker", "ReleaseRequest"]
