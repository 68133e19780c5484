"""tusserver: a standards-compliant, fast, crash-safe tus 1.0 resumable upload server.

Python API::

    from tusserver import Settings, create_app
    app = create_app(Settings(upload_dir=Path("uploads")))   # any ASGI server, or mount it
"""

from tusserver.app import create_app
from tusserver.config import Settings
from tusserver.core import TusCore

__all__ = ["Settings", "TusCore", "create_app"]
__version__ = "0.1.0"
