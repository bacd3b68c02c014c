"""The Reconciliation Service API 0.2 documents, built from a Retriever's lookups; no web framework here.

A query batch is read and checked (``parse_batch``), looked up in one call, and answered as a
result batch (``result_batch``). The manifest, the preview card and suggest are built from the
retriever's candidate tables (``Entities``). Every check that fails raises ``BadRequest`` with
the HTTP status and a message that says what is wrong, which the app turns into a JSON answer.

A candidate's ``score`` is 100 times the retriever's score. In the reranked mode that is the
candidate's share of the query's softmaxed reranker scores, so a query's scores add up to at most
100 and a score reads as the percentage of the reranker's belief that this candidate is the one.
In the hybrid and dense modes it is the fused score or the cosine, on the same 0 to 100 scale.
``match`` is true only on the top candidate of a query the calibrated abstain setting is confident
of, so OpenRefine's "auto-match" accepts exactly the answers fitted to be 95% precise.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from alias_label.data.text import clean_query, fold
from alias_label.search.abstain import rounded

VERSION = "0.2"
DEFAULT_LIMIT = 5
MAX_LIMIT = 100
# A name is a few dozen characters; a longer query is answered on its first characters, which is
# more than the encoder reads anyway, so a pasted document cannot make one lookup costly.
MAX_QUERY_CHARS = 1000
JSONP_CALLBACK = re.compile(r"^[A-Za-z_$][\w$.]{0,99}$")


class BadRequest(Exception):
    """A request the service refuses: the HTTP status and what the client should change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Query:
    key: str  # the client's own id, echoed in the answer
    text: str  # stripped and cut to MAX_QUERY_CHARS; empty means "answer with no candidates"
    limit: int


@dataclass(frozen=True)
class ServiceInfo:
    """What the manifest says about the service, beside its URLs."""

    name: str
    identifier_space: str
    schema_space: str
    type_id: str
    type_name: str
    batch_size: int

    @property
    def types(self) -> list[dict]:
        return [{"id": self.type_id, "name": self.type_name}]


def parse_batch(raw: str | None, batch_size: int) -> list[Query]:
    """The queries of a ``queries=<JSON>`` parameter, in the client's order, or BadRequest."""
    if raw is None:
        raise BadRequest(400, "no 'queries' parameter: send queries={\"q0\": {\"query\": \"...\"}} "
                              "form-encoded in a POST, or in the URL of a GET")
    try:
        batch = json.loads(raw)
    except ValueError as err:
        raise BadRequest(400, f"'queries' is not valid JSON ({err})") from None
    if not isinstance(batch, dict):
        raise BadRequest(400, f"'queries' must be a JSON object keyed by query id, e.g. "
                              f"{{\"q0\": {{\"query\": \"MIT\"}}}}; got a JSON {type(batch).__name__}")
    if len(batch) > batch_size:
        raise BadRequest(413, f"the batch holds {len(batch)} queries; this service answers at most {batch_size} "
                              "at a time (its manifest's batchSize): split it")
    return [parse_query(key, query) for key, query in batch.items()]


def parse_query(key: str, query) -> Query:
    if not isinstance(query, dict):
        raise BadRequest(400, f"query {key!r} must be an object with a 'query' string, got {json.dumps(query)[:80]}")
    if "query" not in query:
        raise BadRequest(400, f"query {key!r} has no 'query' text; this service matches names only")
    text = query["query"]
    if not isinstance(text, str):
        raise BadRequest(400, f"query {key!r}: 'query' must be a string, got {json.dumps(text)[:80]}")
    return Query(key, text.strip()[:MAX_QUERY_CHARS].strip(), parse_limit(key, query.get("limit", DEFAULT_LIMIT)))


def parse_limit(key: str, limit) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit != int(limit) or limit < 1:
        raise BadRequest(400, f"query {key!r}: 'limit' must be a whole number of at least 1, got {json.dumps(limit)}")
    return min(int(limit), MAX_LIMIT)


def texts_to_look_up(queries: list[Query]) -> list[str]:
    """Each distinct non-empty query text once, in first-seen order."""
    return list(dict.fromkeys(q.text for q in queries if q.text))


def candidates_of(matches: pd.DataFrame, column: str) -> dict[str, list[dict]]:
    """A lookup table's rows per query text: id, name, score (0-100) and, alias -> label, match.

    Label -> alias rows carry no ``match``: the abstain setting was fitted alias -> label only; their
    ``description`` names the label of the entity the alias names. A query's row without a match
    (no rank) is no candidate.
    """
    grouped = {}
    for text, rows in matches.groupby("query", sort=False):
        grouped[text] = [{"id": row.qid, "name": getattr(row, column),
                          **({"description": f"alias of {row.label}"} if column == "alias" else {}),
                          "score": rounded(100 * float(row.score), 2, top=100.0),
                          **({"match": bool(row.confident)} if column == "label" else {})}
                         for row in rows.itertuples() if not pd.isna(row.rank)]
    return grouped


def result_batch(queries: list[Query], matches: pd.DataFrame, types: list[dict], column: str = "label") -> dict:
    """The answer to a batch: every client id with its candidates, best first (none for a blank query)."""
    found = candidates_of(matches, column)
    return {q.key: {"result": [{**candidate, "type": types} for candidate in found.get(q.text, [])[:q.limit]]}
            for q in queries}


def answer(lookup, queries: list[Query], types: list[dict], reverse: bool = False) -> dict:
    """The result batch of parsed queries, each distinct text looked up once, in one call of
    ``lookup(texts, k, reverse)`` (a Retriever's ``lookup``, or the service's locked one)."""
    texts = texts_to_look_up(queries)
    if not texts:
        return {q.key: {"result": []} for q in queries}
    matches = lookup(texts, k=max(q.limit for q in queries), reverse=reverse)
    return result_batch(queries, matches, types, "alias" if reverse else "label")


def manifest(info: ServiceInfo, base_url: str) -> dict:
    base = base_url.rstrip("/")
    return {
        "versions": [VERSION],
        "name": info.name,
        "identifierSpace": info.identifier_space,
        "schemaSpace": info.schema_space,
        "defaultTypes": info.types,
        "batchSize": info.batch_size,
        "view": {"url": f"{base}/preview?id={{{{id}}}}"},
        "preview": {"url": f"{base}/preview?id={{{{id}}}}", "width": 420, "height": 160},
        "suggest": {"entity": {"service_url": base, "service_path": "/suggest/entity"}},
    }


class Entities:
    """The candidate tables by id, for the preview card and suggest.

    An id is what a lookup reports as ``qid``: one entity's id, or the ids of every entity that
    carries the same label, joined with ``|``. Either form finds the card.
    """

    def __init__(self, labels: pd.DataFrame, aliases: pd.DataFrame):
        self.labels = labels["label"].tolist()
        self.ids = ["|".join(qids) for qids in labels["qids"]]
        self.websites = [list(sites) for sites in labels["websites"]]
        self.row_of = {}
        for row, qids in enumerate(labels["qids"]):
            self.row_of[self.ids[row]] = row
            for qid in qids:
                self.row_of.setdefault(qid, row)
        self.aliases_of: dict[str, list[str]] = {}
        for alias, qids in zip(aliases["alias"], aliases["qids"], strict=True):
            for qid in qids:
                self.aliases_of.setdefault(qid, []).append(alias)
        self.folded = np.array([fold(clean_query(label)) for label in self.labels], dtype=object)

    def card(self, entity_id: str) -> str | None:
        """The preview card of an id, as a small HTML page, or None for an unknown id."""
        row = self.row_of.get(entity_id)
        if row is None:
            return None
        qids = self.ids[row].split("|")
        aliases = list(dict.fromkeys(a for qid in qids for a in self.aliases_of.get(qid, [])))
        shown = ", ".join(html.escape(a) for a in aliases[:12]) + (f" and {len(aliases) - 12} more"
                                                                  if len(aliases) > 12 else "")
        sites = ", ".join(html.escape(site) for site in self.websites[row] if site)
        lines = [f"<h1 style=\"font-size:1.2em;margin:0 0 .3em\">{html.escape(self.labels[row])}</h1>",
                 f"<p style=\"margin:.2em 0\"><b>id</b> {html.escape(self.ids[row])}</p>"]
        if aliases:
            lines.append(f"<p style=\"margin:.2em 0\"><b>aliases</b> {shown}</p>")
        if sites:
            lines.append(f"<p style=\"margin:.2em 0\"><b>website</b> {sites}</p>")
        body = "\n".join(lines)
        return (f"<html><head><meta charset=\"utf-8\" /></head>\n"
                f"<body style=\"font-family:sans-serif;margin:.5em\">\n{body}\n</body></html>")

    def suggest(self, prefix: str, limit: int, types: list[dict]) -> dict:
        """Labels that start with the prefix (shortest first), then labels that contain it, both
        compared case- and accent-free, so that "unam" suggests "Universidad Nacional Autónoma de México"."""
        key = fold(clean_query(prefix))
        if not key:
            return {"result": []}
        starts = np.flatnonzero([label.startswith(key) for label in self.folded])
        contains = np.flatnonzero([key in label and not label.startswith(key) for label in self.folded])
        rows = [*sorted(starts, key=lambda r: (len(self.labels[r]), self.labels[r])),
                *sorted(contains, key=lambda r: (len(self.labels[r]), self.labels[r]))][:limit]
        return {"result": [{"id": self.ids[r], "name": self.labels[r], "notable": types} for r in rows]}


def jsonp(callback: str, document: dict) -> str:
    """A JSON document wrapped for a JSONP callback, which older OpenRefine clients ask for."""
    if not JSONP_CALLBACK.match(callback):
        raise BadRequest(400, f"callback {callback[:40]!r} is not a JavaScript function name")
    return f"{callback}({json.dumps(document)});"
