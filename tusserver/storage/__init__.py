"""Storage backends. Core and handlers only see the `Store` interface; one module per backend
(only tusserver.backends names one)."""

from tusserver.storage.base import Reader, Store, StoreFull, Writer

__all__ = ["Reader", "Store", "StoreFull", "Writer"]
