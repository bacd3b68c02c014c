"""Serve a trained model as an OpenRefine reconciliation service (Reconciliation Service API 0.2).

The model, its indexes, the reranker and the calibration load once, through ``load_retriever``,
with the same defaults as the lookup script (reranked search, the calibrated abstain); then every
request is a lookup. In OpenRefine: Reconcile > Start reconciling > Add standard service, and give
it http://127.0.0.1:8000/reconcile. Candidate scores run from 0 to 100; ``match`` is true on the
top candidate only when the calibrated abstain setting is confident (alias_label/serve/protocol.py).

Reads   the chosen model folder in models/trained/ and the FAISS indexes its indexes.json names.
Writes  logs/serve.log and logs/serve_args.json, nothing else.

Routes  GET /reconcile (manifest), GET|POST /reconcile?queries=... (a batch), GET|POST /reverse
        (label -> aliases, same batch shape, or ?query=...), GET /preview?id=ID, GET /suggest/entity?prefix=...,
        GET /health, GET /docs (the OpenAPI page).

Example:
    python scripts/serve.py --model student --port 8000
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from alias_label.errors import UserError, run_main
from alias_label.io import save_run_args, setup_logging
from alias_label.models.processes import require_one_process
from alias_label.search.retriever import add_retriever_args, load_retriever

NAME = "serve"
log = logging.getLogger(NAME)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_retriever_args(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 opens it to other machines (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="most queries one request may carry; larger batches get HTTP 413 (default: 50; "
                             "OpenRefine sends 10 unless the manifest allows more)")
    parser.add_argument("--public-url", default=None,
                        help="the URL clients reach the service at, for the manifest's preview, view and suggest "
                             "links, when it runs behind a proxy (default: the address each request came to)")
    parser.add_argument("--name", default=None, help="service name OpenRefine shows (default: from model and mode)")
    parser.add_argument("--identifier-space", default="urn:alias-label-retriever:entity",
                        help="URI naming the ids the service returns, e.g. http://www.wikidata.org/entity/ when "
                             "the table's qids are Wikidata's")
    parser.add_argument("--schema-space", default="urn:alias-label-retriever:schema",
                        help="URI naming the types and properties the service uses")
    parser.add_argument("--type-id", default="entity", help="id of the one type every candidate has (default: entity)")
    parser.add_argument("--type-name", default="Entity", help="name of that type (default: Entity)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    return args


def build_app(args: argparse.Namespace):
    """The app for these flags, with the retriever loaded once."""
    from alias_label.serve.app import create_app
    from alias_label.serve.protocol import ServiceInfo

    retriever = load_retriever(args.model, args.mode, args.device, args.int8, args.int8_scheme)
    info = ServiceInfo(name=args.name or f"alias-label-retriever ({retriever.name})",
                       identifier_space=args.identifier_space, schema_space=args.schema_space,
                       type_id=args.type_id, type_name=args.type_name, batch_size=args.batch_size)
    return create_app(retriever, info, args.public_url)


def check_port(host: str, port: int) -> None:
    """Fail before the model loads when the address is taken or not this machine's."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}): pick another --port or --host") from None


def main(args: argparse.Namespace):
    import uvicorn

    setup_logging(NAME)
    save_run_args(NAME, args)
    require_one_process("scripts/serve.py")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    check_port(args.host, args.port)
    app = build_app(args)
    log.info("serving %s at http://%s:%d/reconcile", app.title, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_main(main, parse_args(sys.argv[1:]))
