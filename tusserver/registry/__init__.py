"""The upload registry: the interface and typed records (base.py), one module per backend
(sqlite.py, postgres.py). Only tusserver.backends names a backend."""

from tusserver.registry.base import (
    ACTIVE,
    COMPLETE,
    EXPIRED,
    GONE_STATES,
    NO_JOB,
    TERMINATED,
    Delivery,
    Job,
    JobErrorRow,
    NewDelivery,
    Part,
    Registry,
    UploadFilter,
    UploadInfo,
    UploadStats,
)

__all__ = [
    "ACTIVE",
    "COMPLETE",
    "EXPIRED",
    "GONE_STATES",
    "NO_JOB",
    "TERMINATED",
    "Delivery",
    "Job",
    "JobErrorRow",
    "NewDelivery",
    "Part",
    "Registry",
    "UploadFilter",
    "UploadInfo",
    "UploadStats",
]
