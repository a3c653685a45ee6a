"""The facade's aiohttp server, whose connections answer in OpenAI's error format even where aiohttp
answers by itself, before any middleware runs: a request its HTTP parser refuses (a malformed request
line, a header line too long, broken chunking, ...), an expectation a route refuses, or a failure
outside the middlewares. aiohttp has no hook for these (aio-libs/aiohttp#3287): RequestHandler.handle_error
builds the parser's answer, and Application builds a plain web.Server, which builds plain RequestHandlers."""

from __future__ import annotations

import re
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from loguru import logger

from aiproxy.errors import InternalError, error_type_for_http
from aiproxy.httpapi.app import SERVER_NAME, http_error_response
from aiproxy.httpapi.errors import error_body, json_response
from aiproxy.httpapi.metadata import REQUEST_ID_KEY
from aiproxy.identity import request_id

# Where aiohttp's parser messages start quoting the request's bytes (the llhttp ones after a blank line).
_QUOTED_BYTES = re.compile(r"\n\n| b'| b\"| bytearray\(")


def parser_reason(exc: HttpProcessingError) -> str:
    """What the parser refused, without the bytes it quotes (the client's, a key among them)."""
    if isinstance(exc, LineTooLong):
        return f"a line of the request head is longer than {exc.args[1]} bytes"
    reason = " ".join(_QUOTED_BYTES.split(exc.message, maxsplit=1)[0].split()).rstrip(":. ")
    return reason or "malformed request"


def _error_body(status: int, exc: BaseException | None) -> dict:
    if isinstance(exc, HttpProcessingError):
        return error_body(f"The request is not valid HTTP/1.1 ({parser_reason(exc)}).", error_type_for_http(status))
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        return InternalError().to_body()
    return error_body(HTTPStatus(status).phrase, error_type_for_http(status))


class _OpenAIErrorsHandler(RequestHandler):
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
            if exc.status < 400:
                raise
            return http_error_response(request, exc)

    return handler


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections answer aiohttp's own errors in OpenAI's format."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # Application._make_handler takes no server class
        server.request_handler = _refusing_in_openai_format(server.request_handler)
        return server
