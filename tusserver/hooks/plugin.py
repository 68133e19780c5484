"""Python plugin hooks (--hooks-plugin module:object): the cheapest kind, no process spawn.

The object (an instance, a class instantiated without arguments, or a module) has one method
per event, named after it with underscores (`pre_create`, `post_finish`, `pre_access`, ...),
or a catch-all `invoke_hook`. Each receives a typed `HookRequest` and returns a `HookResponse`,
a dict in tusd's JSON schema, or None. Methods may be async (preferred) or plain functions,
which then run in a worker thread so they cannot stall the event loop.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import anyio

from tusserver.hooks.model import HookFailed, HookRequest, HookResponse, response_from_json


def load_object(spec: str) -> Any:
    """'package.module:attr' (or just 'package.module') -> the object; classes are instantiated."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ValueError(f"--hooks-plugin must be module:object, got {spec!r}")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in filter(None, attr.split(".")):
        target = getattr(target, part)
    return target() if inspect.isclass(target) else target


class PluginHooks:
    """Calls the plugin object's method for each event."""

    kind = "plugin"

    def __init__(self, spec: str | Any, timeout: float):
        self.target = load_object(spec) if isinstance(spec, str) else spec
        self.timeout = timeout

    def method(self, event: str) -> Callable[..., Any] | None:
        found = getattr(self.target, event.replace("-", "_"), None)
        if found is None:
            found = getattr(self.target, "invoke_hook", None)
        return found if callable(found) else None

    def handles(self, event: str) -> bool:
        return self.method(event) is not None

    async def invoke(self, request: HookRequest) -> HookResponse:
        method = self.method(request.type)
        if method is None:
            return HookResponse()
        try:
            with anyio.fail_after(self.timeout or None):
                if inspect.iscoroutinefunction(method):
                    result = await method(request)
                else:
                    result = await anyio.to_thread.run_sync(method, request)
                    if inspect.isawaitable(result):
                        result = await result
        except TimeoutError:
            raise HookFailed(f"plugin {request.type} timed out", "timeout") from None
        except HookFailed:
            raise
        except Exception as exc:
            raise HookFailed(f"plugin {request.type} raised {exc!r}") from exc
        if result is None:
            return HookResponse()
        if isinstance(result, HookResponse):
            return result
        return response_from_json(result)
