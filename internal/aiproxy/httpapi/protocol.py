"""The facade's aiohttp server, whose connections answer in OpenAI's error format even where aiohttp
answers by itself, before any middleware runs: a request its HTTP parser refuses (a malformed request
line, a header line too long, broken chunking, ...), an expectation a route refuses, or a failure
outside the middlewares. aiohttp has no hook for these (aio-libs/aiohttp#3287): RequestHandler.handle_error
builds the parser's answer, and Application builds a plain web.Server, which builds plain RequestHandlers."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from loguru import logger

from aiproxy.errors import InternalError, error_type_for_http
from aiproxy.httpapi.app import SERVER_NAME, http_error_response
from aiproxy.httpapi.errors import error_body, json_response, parser_reason
from aiproxy.httpapi.metadata import REQUEST_ID_KEY
from aiproxy.identity import request_id


def _error_body(status: int, exc: BaseException | None) -> dict:
    if isinstance(exc, ContentEncodingError):  # at the head: a coding aiohttp has no decoder for here (br, zstd)
        return error_body("The request body's Content-Encoding is not one this gateway decodes; send it "
                          "uncompressed, or as gzip or deflate.", error_type_for_http(status))
    if isinstance(exc, HttpProcessingError):
        return error_body(f"The request is not valid HTTP/1.1 ({parser_reason(exc)}).", error_type_for_http(status))
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        return InternalError().to_body()
    return error_body(HTTPStatus(status).phrase, error_type_for_http(status))


class _OpenAIErrorsHandler(RequestHandler):
    __slots__ = ()  # as RequestHandler's: no __dict__ per connection

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:
            error = getattr(self._messages[-1][0], "exc", None)  # a refused request is queued as an error
            if isinstance(error, HttpProcessingError):
                self._fail_unfinished_bodies(error)

    def _fail_unfinished_bodies(self, error: HttpProcessingError) -> None:
        """aiohttp's C parser raises on broken framing inside a body (a bad chunk size) without telling
        that body's reader, which would wait for the rest until REQUEST_BODY_TIMEOUT_SECONDS and answer
        408: tell it, as the parser does for a body it cannot decode (RequestPayloadError, a 400)."""
        bodies = [body for _, body in self._messages]
        if self._current_request is not None:
            bodies.append(self._current_request.content)
        for body in bodies:
            if not body.is_eof() and body.exception() is None:
                failure = RequestPayloadError(error.message)
                failure.__cause__ = error
                body.set_exception(failure)

    def handle_error(self, request, status=500, exc=None, message=None) -> web.StreamResponse:
        rid = request.get(REQUEST_ID_KEY) or request_id(None)
        with logger.contextualize(request_id=rid):  # aiohttp's log line names the id the client is given
            super().handle_error(request, status, exc, message)  # logs; raises once a response has begun
        # The response_prepare hooks do not run for a request that was never routed: their headers here.
        response = json_response(_error_body(status, exc), status, {"X-Request-ID": rid, "Server": SERVER_NAME})
        response.force_close()  # as aiohttp's: the connection's framing may be lost
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:  # web.Server's, with the handler above
        return _OpenAIErrorsHandler(self, loop=self._loop, **self._kwargs)


def _refusing_in_openai_format(handle):
    """The application's handler, whose HTTP errors raised before the middlewares run (the route's
    expect handler refusing an `Expect` other than 100-continue) are in OpenAI's format too."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await handle(request)
        except web.HTTPException as exc:
            return http_error_response(request, exc)

    return handler


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections answer aiohttp's own errors in OpenAI's format."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # Application._make_handler takes no server class
        server.request_handler = _refusing_in_openai_format(server.request_handler)
        return server
