"""One handler per tus method; each is thin and delegates to the core."""

from tusserver.handlers.delete import handle_delete
from tusserver.handlers.get import handle_get
from tusserver.handlers.head import handle_head
from tusserver.handlers.options import handle_options
from tusserver.handlers.patch import handle_patch
from tusserver.handlers.post import handle_post

__all__ = [
    "handle_delete",
    "handle_get",
    "handle_head",
    "handle_options",
    "handle_patch",
    "handle_post",
]
