"""cAdvisor's HTTP answers: ``/healthz``, the events API and the spec API as its mux and handlers give them.

Turns a request into a history answer, an opened stream or cAdvisor's own
plain-text error (status, headers and body as Go's ``http.Error`` writes
them), and closes the connection unanswered where Go would panic. It must
never hold events or streams itself (the :class:`~.core.Simulator` does) and
never answer differently from a real cAdvisor where the real one is defined
(CADVISOR-API.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .golang import GoPanic, decode_url_path, parse_go_query
from .query import ApiError, EventQuery, api_request, events_container, spec_request

if TYPE_CHECKING:
    from .core import Simulator

__all__ = ["CadvisorResource", "plain_error"]

log = Logger()


class CadvisorResource(Resource):
    """``/healthz`` and ``/api/...`` answered the way cAdvisor's mux and handlers do."""

    isLeaf = True

    def __init__(self, simulator: "Simulator") -> None:
        super().__init__()
        self._simulator = simulator

    def render(self, request: Request):
        request.responseHeaders.removeHeader(b"server")  # Go sends none
        path = decode_url_path(request.path)
        if path == "/healthz":
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"ok"
        if path != "/api" and not path.startswith("/api/"):
            return plain_error(request, 404, "404 page not found")
        try:
            args = parse_go_query(request.uri.partition(b"?")[2])
            request_type, container = api_request(path, args)
            if request_type == "spec":
                status, body = self._simulator.cluster.spec_answer(container, spec_request(args))
                if status != 200:
                    return plain_error(request, status, body.decode().rstrip("\n"))
                request.setHeader(b"content-type", b"application/json")
                return body
            query = EventQuery.from_args(args, events_container(path, args))
            if not query.stream:
                body = self._simulator.history_answer(query)
                request.setHeader(b"content-type", b"application/json")
                return body
            if query.start_ns is not None or query.end_ns is not None:
                raise ApiError(500, "for a call to watch, request.StartTime and request.EndTime must be uninitialized")
            return self._simulator.open_stream(request, query)
        except ApiError as error:
            return plain_error(request, error.code, error.message)
        except GoPanic as panic:
            log.error("http: panic serving {peer}: {panic}", peer=request.getClientAddress(), panic=panic)
            request.channel.loseConnection()
            return NOT_DONE_YET


def plain_error(request: Request, code: int, message: str) -> bytes:
    """Go's ``http.Error``: plain text, nosniff, message plus newline.

    Every error the simulator answers, cAdvisor's or its own, is written here,
    so none of them differs from Go's in a header or the final newline.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return (message + "\n").encode("utf-8", "surrogateescape")
