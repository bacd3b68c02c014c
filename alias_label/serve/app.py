"""The reconciliation endpoint: a FastAPI app over one loaded Retriever.

Routes (each also answers CORS preflights, and carries CORS headers on errors too, because a
browser calls the manifest, suggest and preview directly):

- ``GET /reconcile``: the manifest; with ``queries=<JSON>`` (GET or form-encoded POST), a batch.
- ``GET|POST /reverse``: the same batch shape, label -> aliases (the hybrid ranking).
- ``GET /preview?id=ID``: an HTML card with the label, its aliases and its id.
- ``GET /suggest/entity?prefix=...``: labels that start with or contain the prefix.
- ``GET /health``: the model and mode being served.

Lookups run one batch at a time behind a lock, in a worker thread: the model, FAISS and the
reranker already use every core for one batch, and running two at once would only make each wait
on the other; parsing and answering other requests go on meanwhile.
"""

from __future__ import annotations

import logging
import threading
import traceback
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from alias_label.serve.protocol import (
    MAX_LIMIT,
    BadRequest,
    Entities,
    ServiceInfo,
    answer,
    jsonp,
    manifest,
    parse_batch,
    parse_limit,
    parse_query,
)

log = logging.getLogger(__name__)

# Room for a full batch of long queries in a form-encoded body, where one non-ASCII character
# takes up to 12 bytes; anything larger is refused before it is read.
BODY_BYTES_PER_QUERY = 16 * 1024
BODY_BYTES_MIN = 1024 * 1024


class InternalErrors:
    """Turns an unexpected exception into a JSON 500 inside the CORS layer, so browsers can read it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.error("request failed:\n%s", traceback.format_exc())
            if started or scope["type"] != "http":
                raise
            response = JSONResponse({"status": "error", "message": "internal error; the server log has the details"},
                                    status_code=500)
            await response(scope, receive, send)


async def read_form(request: Request, max_bytes: int) -> FormData | dict:
    """The parameters of a request: its URL's, and a POST's form body, refused beyond ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"the request body has {int(declared):,} bytes; this service reads at most "
                              f"{max_bytes:,}: send fewer or shorter queries per batch")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest(413, f"the request body is over {max_bytes:,} bytes: send fewer or shorter queries")
    fields = {key: values[-1] for key, values in parse_qs(request.url.query).items()}
    content_type = request.headers.get("content-type", "")
    if body and content_type.startswith("multipart/form-data"):
        async def replay():
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        form = await Request(request.scope, replay).form()
        fields.update({key: value for key, value in form.items() if isinstance(value, str)})
    elif body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(400, "the request body is not UTF-8 text") from None
        fields.update({key: values[-1] for key, values in parse_qs(text).items()})
    return fields


def error_response(err: BadRequest) -> JSONResponse:
    return JSONResponse({"status": "error", "message": err.message}, status_code=err.status)


def create_app(retriever, info: ServiceInfo, public_url: str | None = None) -> FastAPI:
    """The app serving ``retriever`` (a loaded Retriever); ``public_url`` fixes the URLs the manifest gives."""
    app = FastAPI(title=info.name, docs_url="/docs", redoc_url=None)
    entities = Entities(retriever.candidates.labels, retriever.candidates.aliases)
    lock = threading.Lock()
    max_bytes = max(BODY_BYTES_MIN, info.batch_size * BODY_BYTES_PER_QUERY)

    def lookup(texts: list[str], k: int, reverse: bool):
        with lock:
            return retriever.lookup(texts, k=k, reverse=reverse)

    async def respond(queries: list, reverse: bool) -> dict:
        return await run_in_threadpool(answer, lookup, queries, info.types, reverse)

    def base_url(request: Request) -> str:
        return public_url or str(request.base_url)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest):
        return error_response(err)

    @app.api_route("/reconcile", methods=["GET", "POST"])
    async def reconcile(request: Request):
        fields = await read_form(request, max_bytes)
        if "queries" not in fields:
            document = manifest(info, base_url(request))
            if "callback" in fields:
                return Response(jsonp(fields["callback"], document), media_type="application/javascript")
            return document
        return await respond(parse_batch(fields["queries"], info.batch_size), reverse=False)

    @app.api_route("/reverse", methods=["GET", "POST"])
    async def reverse(request: Request):
        fields = await read_form(request, max_bytes)
        if "query" in fields and "queries" not in fields:
            queries = [parse_query("q0", {"query": fields["query"], "limit": _number(fields.get("limit", "5"))})]
        elif "queries" in fields:
            queries = parse_batch(fields["queries"], info.batch_size)
        else:  # a blank query= arrives as no parameter at all
            raise BadRequest(400, "no label to look up: ask /reverse?query=LABEL, or send a batch as "
                                  "queries={\"q0\": {\"query\": \"...\"}}")
        return await respond(queries, reverse=True)

    @app.get("/preview", response_class=HTMLResponse)
    async def preview(id: str | None = None):
        if not id:
            raise BadRequest(400, "preview needs an entity id: /preview?id=ID")
        card = entities.card(id)
        if card is None:
            raise BadRequest(404, f"no entity has the id {id[:200]!r}")
        return HTMLResponse(card)

    # A plain def: FastAPI runs it in a worker thread, so the scan over every label blocks no other request.
    @app.get("/suggest/entity")
    def suggest(prefix: str = "", limit: str = "10", callback: str | None = None):
        document = entities.suggest(prefix[:200], parse_limit("suggest", _number(limit)), info.types)
        if callback:
            return Response(jsonp(callback, document), media_type="application/javascript")
        return document

    @app.get("/health")
    async def health():
        return {"status": "ok", "retriever": retriever.name, "labels": len(entities.labels),
                "data_fingerprint": retriever.data_fingerprint, "max_limit": MAX_LIMIT}

    app.add_middleware(InternalErrors)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["*"])
    return app


def _number(text: str):
    """A URL parameter as a number where it reads as one, else the text, for parse_limit to judge."""
    try:
        return float(text)
    except ValueError:
        return text
