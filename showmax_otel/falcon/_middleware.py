"""The Falcon middleware that tells the observer what Falcon decided.

Falcon knows the route template and the resource only inside the app; the
wrappers around `App.__call__` learn them here. `process_response` runs for
every request that got past routing, after the responder and any error
handler, whether the request succeeded or not.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.propagators import (
    FuncSetter,
    get_global_response_propagator,
)

from ._observer import STATE_KEY, RequestObserver, RequestState

__all__ = ["RouteMiddleware"]


def _append_header(resp: Any, name: str, value: str) -> None:
    resp.append_header(name, value)


_response_setter = FuncSetter(_append_header)


class RouteMiddleware:
    """Records the route template and resource of each request (WSGI and ASGI)."""

    def __init__(self, observer: RequestObserver) -> None:
        self._observer = observer
        self._traced_request_attrs = observer.traced_request_attrs

    def process_response(
        self, req: Any, resp: Any, resource: object, req_succeeded: bool
    ) -> None:
        state = req.env.get(STATE_KEY)
        if state is not None:
            self._note(state, req, resp, resource)

    async def process_response_async(
        self, req: Any, resp: Any, resource: object, req_succeeded: bool
    ) -> None:
        state = req.scope.get(STATE_KEY)
        if state is not None:
            self._note(state, req, resp, resource)

    def _note(self, state: RequestState, req: Any, resp: Any, resource: object) -> None:
        state.route = req.uri_template
        state.resource = resource
        if self._traced_request_attrs and state.span.is_recording():
            state.span.set_attributes(self._observer.traced_request_attributes(req))
        # Set by opentelemetry-instrument when OTEL_PROPAGATORS asks for a
        # `traceresponse` header; None otherwise.
        propagator = get_global_response_propagator()
        if propagator is not None and not state.excluded:
            propagator.inject(resp, setter=_response_setter)
