"""`GET /api/openapi.json`: the JSON API's OpenAPI description (public, like any API doc)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from helpdesk.openapi import openapi_document


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(str(request.base_url)))


routes = [Route("/api/openapi.json", openapi_json, methods=["GET"])]
