"""Storage backends. The handlers only see the `Store` interface; one module per backend."""

from tusserver.storage.base import Store, StoreFull, Writer
from tusserver.storage.file import FileStore

__all__ = ["FileStore", "Store", "StoreFull", "Writer"]
