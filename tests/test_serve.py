"""The reconciliation service: the spec's own schemas, OpenRefine's request shapes, bad input, and a real client.

Responses are validated against the published Reconciliation Service API 0.2 schemas, kept in
tests/reconciliation-api-0.2/ with the specification's valid and invalid examples.
"""

from __future__ import annotations

import html
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest
import serve as serve_cli
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from alias_label import load_retriever
from alias_label.errors import UserError, run_main
from alias_label.search.abstain import rounded
from alias_label.serve.app import create_app
from alias_label.serve.local import local_service
from alias_label.serve.protocol import MAX_QUERY_CHARS, Entities, ServiceInfo, answer, parse_batch

SPEC = Path(__file__).parent / "reconciliation-api-0.2"
PUBLISHED = "https://reconciliation-api.github.io/specs/0.2/schemas/"
INFO = ServiceInfo("test service", "urn:test:entity", "urn:test:schema", "entity", "Entity", batch_size=12)
OPENREFINE_ALIASES = ["UdeG", "MIT", "Uni Wien", "Harvard", "Caltech", "ETH Zürich", "LSE", "UCL", "TU Delft",
                      "Sorbonne"]


def registry() -> Registry:
    """Every schema under its published URL and its own $id, so references resolve offline."""
    resources = []
    for path in sorted((SPEC / "schemas").glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(contents, default_specification=DRAFT7)
        resources += [(PUBLISHED + path.name, resource), (contents["$id"].rstrip("#"), resource)]
    return Registry().with_resources(resources)


REGISTRY = registry()


def validator(schema: str) -> Draft7Validator:
    return Draft7Validator(REGISTRY.contents(PUBLISHED + f"{schema}.json"), registry=REGISTRY)


def assert_valid(schema: str, document) -> None:
    errors = [error.message for error in validator(schema).iter_errors(document)]
    assert not errors, f"{schema}: {errors[:3]}"


EXAMPLES = sorted(path for path in (SPEC / "examples").glob("*/*/*.json")
                  if (SPEC / "schemas" / f"{path.parent.parent.name}.json").exists())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_the_schemas_accept_the_valid_examples_and_reject_the_invalid(example):
    document = json.loads(example.read_text(encoding="utf-8"))
    valid = validator(example.parent.parent.name).is_valid(document)
    assert valid == (example.parent.name == "valid")


def test_every_kind_of_response_has_its_examples():
    kinds = {path.parent.parent.name for path in EXAMPLES}
    assert {"manifest", "reconciliation-result-batch", "reconciliation-query-batch",
            "suggest-entities-response"} <= kinds
    assert any(path.parent.name == "invalid" for path in EXAMPLES if path.parent.parent.name == "manifest")


@pytest.fixture(scope="module")
def retriever(pipeline_home):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIAS_LABEL_HOME", str(pipeline_home))
        yield load_retriever("teacher")


@pytest.fixture(scope="module")
def client(retriever):
    return TestClient(create_app(retriever, INFO))


def reconcile(client, batch: dict, method: str = "post"):
    payload = {"queries": json.dumps(batch)}
    return client.post("/reconcile", data=payload) if method == "post" else client.get("/reconcile", params=payload)


def expected(retriever, batch: dict) -> dict:
    """What the in-process lookup gives for a batch, in the protocol's shape."""
    return answer(retriever.lookup, parse_batch(json.dumps(batch), 1000), INFO.types)


def test_manifest_follows_the_schema_and_points_at_the_routes(client):
    for response in (client.get("/reconcile"), client.post("/reconcile")):
        assert response.status_code == 200
        manifest = response.json()
        assert_valid("manifest", manifest)
        assert manifest["versions"] == ["0.2"] and manifest["batchSize"] == 12
        assert manifest["defaultTypes"] == [{"id": "entity", "name": "Entity"}]
        assert manifest["preview"]["url"] == "http://testserver/preview?id={{id}}"
        assert manifest["suggest"]["entity"] == {"service_url": "http://testserver", "service_path": "/suggest/entity"}
    wrapped = client.get("/reconcile", params={"callback": "jQuery123_cb"})
    assert wrapped.text.startswith("jQuery123_cb({") and wrapped.text.endswith("});")
    assert client.get("/reconcile", params={"callback": "alert(1)//"}).status_code == 400


def test_a_batch_answers_as_the_in_process_lookup_in_get_and_post(client, retriever):
    batch = {f"q{i}": {"query": alias} for i, alias in enumerate(OPENREFINE_ALIASES)}
    answers = [reconcile(client, batch, method) for method in ("post", "get")]
    for response in answers:
        assert response.status_code == 200
        assert_valid("reconciliation-result-batch", response.json())
        assert response.json() == expected(retriever, batch)
    result = answers[0].json()
    assert list(result) == list(batch)
    table = retriever.lookup(OPENREFINE_ALIASES, k=5)
    for key, alias in zip(batch, OPENREFINE_ALIASES, strict=True):
        candidates = result[key]["result"]
        rows = table[table["query"] == alias]
        assert [c["id"] for c in candidates] == rows["qid"].tolist()
        assert [c["name"] for c in candidates] == rows["label"].tolist()
        assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
        assert [c["match"] for c in candidates] == [bool(rows["confident"].iloc[0])] + [False] * (len(rows) - 1)


def test_match_is_the_calibrated_abstain_on_the_top_candidate_only(client, retriever):
    table = retriever.lookup(OPENREFINE_ALIASES, k=3)
    result = reconcile(client, {f"q{i}": {"query": a, "limit": 3} for i, a in enumerate(OPENREFINE_ALIASES)}).json()
    for i, alias in enumerate(OPENREFINE_ALIASES):
        sure = bool(table.loc[table["query"] == alias, "confident"].iloc[0])
        assert [c["match"] for c in result[f"q{i}"]["result"]] == [sure, False, False]
    never = TestClient(create_app(retriever, INFO))
    retriever_abstain, retriever.abstain = retriever.abstain, {"threshold": 2.0, "margin": 0.0}
    try:
        abstained = reconcile(never, {"q0": {"query": "MIT"}}).json()["q0"]["result"]
    finally:
        retriever.abstain = retriever_abstain
    assert abstained and not any(c["match"] for c in abstained)  # abstained: candidates kept, none a match


def test_the_request_shapes_openrefine_sends(client, retriever):
    typed = {"q0": {"query": "MIT", "type": "entity", "type_strict": "should"},
             "q1": {"query": "UdeG", "type": ["entity"], "type_strict": "any", "limit": 2,
                    "properties": [{"pid": "country", "v": "Mexico"},
                                   {"pid": "located_in", "v": {"id": "Q60", "name": "Guadalajara"}}]},
             "q2": {"query": "Uni Wien", "properties": [{"pid": "founded", "v": 1365}], "unknown_field": True}}
    assert_valid("reconciliation-query-batch", {k: {f: v for f, v in q.items() if f != "unknown_field"}
                                                for k, q in typed.items()})
    response = reconcile(client, typed)
    assert response.status_code == 200 and response.json() == expected(retriever, typed)
    assert len(response.json()["q1"]["result"]) == 2
    guessing = {f"q{i}": {"query": alias, "limit": 3} for i, alias in enumerate(OPENREFINE_ALIASES)}
    assert_valid("reconciliation-query-batch", guessing)
    result = reconcile(client, guessing).json()
    assert_valid("reconciliation-result-batch", result)
    assert all(len(result[key]["result"]) == 3 and result[key]["result"][0]["type"] == INFO.types for key in guessing)


@pytest.mark.parametrize(("queries", "status", "message"), [
    ("{not json", 400, "'queries' is not valid JSON"),
    ("[{\"query\": \"MIT\"}]", 400, "must be a JSON object keyed by query id"),
    ("\"MIT\"", 400, "must be a JSON object keyed by query id"),
    ("{\"q0\": {\"limit\": 3}}", 400, "query 'q0' has no 'query' text"),
    ("{\"q0\": {\"query\": 42}}", 400, "query 'q0': 'query' must be a string, got 42"),
    ("{\"q0\": {\"query\": [\"MIT\"]}}", 400, "'query' must be a string"),
    ("{\"q0\": \"MIT\"}", 400, "query 'q0' must be an object"),
    ("{\"q0\": {\"query\": \"MIT\", \"limit\": 0}}", 400, "'limit' must be a whole number of at least 1, got 0"),
    ("{\"q0\": {\"query\": \"MIT\", \"limit\": \"five\"}}", 400, "'limit' must be a whole number"),
    (json.dumps({f"q{i}": {"query": "MIT"} for i in range(13)}), 413, "the batch holds 13 queries; this service "
                                                                     "answers at most 12"),
])
def test_bad_input_gets_a_clear_json_error_and_the_service_keeps_answering(client, queries, status, message):
    response = client.post("/reconcile", data={"queries": queries}, headers={"Origin": "http://localhost:3333"})
    assert response.status_code == status
    assert response.json()["status"] == "error" and message in response.json()["message"]
    assert response.headers["access-control-allow-origin"] == "*"
    assert reconcile(client, {"q0": {"query": "MIT"}}).json()["q0"]["result"]


def test_blank_and_huge_queries_are_answered_and_leave_the_others_alone(client, retriever):
    huge = "Universidad " * 9000  # over 100,000 characters
    assert len(huge) > 100_000
    result = reconcile(client, {"a": {"query": ""}, "b": {"query": "   \t"}, "c": {"query": "MIT"},
                                "d": {"query": huge}}).json()
    assert result["a"] == {"result": []} and result["b"] == {"result": []}
    assert result["c"] == expected(retriever, {"c": {"query": "MIT"}})["c"]
    assert result["d"] == expected(retriever, {"d": {"query": huge[:MAX_QUERY_CHARS]}})["d"]
    assert reconcile(client, {"a": {"query": " "}}).json() == {"a": {"result": []}}
    # invisible marks alone read as a blank query; around a name, they read as the name
    marked = reconcile(client, {"a": {"query": "\ufeff\u200b"}, "c": {"query": "\ufeffMIT\u200b"}}).json()
    assert marked["a"] == {"result": []} and marked["c"] == result["c"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(client):
    response = client.post("/reconcile", content=b"queries=" + b"x" * (2 * 1024 * 1024),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413 and "at most" in response.json()["message"]


def test_cors_on_every_route_errors_and_preflight_included(client):
    origin = {"Origin": "http://127.0.0.1:3333"}
    for path in ("/reconcile", "/suggest/entity?prefix=uni", "/preview?id=nope", "/preview", "/health",
                 "/no-such-route"):
        response = client.get(path, headers=origin)
        assert response.headers.get("access-control-allow-origin") == "*", path
    preflight = client.options("/reconcile", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"


def test_preview_shows_label_aliases_and_id_and_404s_an_unknown_id(client, retriever):
    labels, aliases = retriever.candidates.labels, retriever.candidates.aliases
    row = next(i for i, qids in enumerate(labels["qids"])
               if any(set(qids) & set(alias_qids) for alias_qids in aliases["qids"]))
    qid = labels["qids"].iloc[row][0]
    card = client.get("/preview", params={"id": qid})
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/html")
    assert html.escape(labels["label"].iloc[row]) in card.text and html.escape(qid) in card.text
    alias = aliases.loc[aliases["qids"].map(lambda q: qid in q), "alias"].iloc[0]
    assert html.escape(alias) in card.text
    missing = client.get("/preview", params={"id": "no-such-entity"})
    assert missing.status_code == 404 and "no entity has the id 'no-such-entity'" in missing.json()["message"]


def test_preview_escapes_every_text():
    labels = pd.DataFrame({"label": ["<script>alert(1)</script> & Co"], "qids": [["Q<1>"]],
                           "websites": [["\"evil.example\" onload=x"]]})
    aliases = pd.DataFrame({"alias": ["<img src=x onerror=alert(2)>"], "qids": [["Q<1>"]]})
    card = Entities(labels, aliases).card("Q<1>")
    assert "<script>" not in card and "<img" not in card and "\"evil" not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in card and "Q&lt;1&gt;" in card


def test_suggest_finds_labels_by_prefix_then_by_substring(client, retriever):
    labels = retriever.candidates.labels["label"]
    word = labels.str.split().str[0].value_counts().index[0]
    response = client.get("/suggest/entity", params={"prefix": word[:4].upper(), "limit": "7"})
    assert response.status_code == 200
    assert_valid("suggest-entities-response", response.json())
    names = [item["name"] for item in response.json()["result"]]
    assert 0 < len(names) <= 7
    starts = [name.casefold().startswith(word[:4].casefold()) for name in names]
    assert starts == sorted(starts, reverse=True)  # prefix matches come first
    assert all(word[:4].casefold() in name.casefold() for name in names)
    assert client.get("/suggest/entity", params={"prefix": ""}).json() == {"result": []}
    assert client.get("/suggest/entity", params={"prefix": "x", "limit": "-1"}).status_code == 400


def test_suggest_folds_case_and_accents():
    labels = pd.DataFrame({"label": ["Universidad Autónoma", "Otra Universidad", "ÉCOLE"],
                           "qids": [["a"], ["b"], ["c"]], "websites": [[], [], []]})
    entities = Entities(labels, pd.DataFrame({"alias": [], "qids": []}))
    assert [r["id"] for r in entities.suggest("univ", 5, INFO.types)["result"]] == ["a", "b"]
    assert [r["id"] for r in entities.suggest("autonoma", 5, INFO.types)["result"]] == ["a"]
    assert [r["id"] for r in entities.suggest("ecole", 5, INFO.types)["result"]] == ["c"]


def test_suggest_reads_labels_and_prefixes_as_they_show():
    labels = pd.DataFrame({"label": ["\ufeffUniversity of Vienna Medical School", "Vienna University"],
                           "qids": [["a"], ["b"]], "websites": [[], []]})
    entities = Entities(labels, pd.DataFrame({"alias": [], "qids": []}))
    # a byte-order mark before a label, or a zero-width space in the prefix, does not hide a prefix match
    assert [r["id"] for r in entities.suggest("univ", 5, INFO.types)["result"]] == ["a", "b"]
    assert [r["id"] for r in entities.suggest("\u200bvienna", 5, INFO.types)["result"]] == ["b", "a"]
    assert entities.suggest("\u200b", 5, INFO.types) == {"result": []}


def test_reverse_route_gives_aliases_of_a_label(client, retriever):
    label = retriever.candidates.labels["label"].iloc[0]
    single = client.get("/reverse", params={"query": label, "limit": "3"})
    assert single.status_code == 200
    table = retriever.lookup([label], k=3, reverse=True)
    assert [c["name"] for c in single.json()["q0"]["result"]] == table["alias"].tolist()
    assert [c["description"] for c in single.json()["q0"]["result"]] == [f"alias of {named}"
                                                                         for named in table["label"]]
    assert not any("match" in c for c in single.json()["q0"]["result"])  # no abstain is fitted label -> alias
    assert_valid("reconciliation-result-batch", single.json())
    batch = client.post("/reverse", data={"queries": json.dumps({"x": {"query": label, "limit": 3}})})
    assert batch.json()["x"] == single.json()["q0"]
    for blank in ({}, {"query": ""}):
        answer = client.get("/reverse", params=blank)
        assert answer.status_code == 400 and answer.json()["message"].startswith(
            "no label to look up: ask /reverse?query=LABEL, or send a batch as queries=")
    assert client.get("/reverse", params={"query": label, "limit": "many"}).status_code == 400


@pytest.fixture(scope="module")
def server(pipeline_home):
    """scripts/serve.py in its own process, on a free port of 127.0.0.1."""
    with local_service(["--batch-size", "12"], {"ALIAS_LABEL_HOME": str(pipeline_home), "HF_HUB_OFFLINE": "1"},
                       timeout_s=120) as url:
        yield url


def test_the_reconciler_package_reconciles_a_column_as_the_lookup_does(server, retriever):
    from reconciler import reconcile as reconcile_column

    column = pd.Series(OPENREFINE_ALIASES + ["Oxford", "Stanford", "UNAM"], name="institution")
    result = reconcile_column(column, top_res="all", reconciliation_endpoint=f"{server}/reconcile")
    chunks = [column.tolist()[i:i + 10] for i in range(0, len(column), 10)]  # the client's batches of ten
    table = pd.concat([retriever.lookup(chunk, k=5) for chunk in chunks], ignore_index=True)
    assert result["input_value"].tolist() == table["query"].tolist()
    assert result["id"].tolist() == table["qid"].tolist() and result["name"].tolist() == table["label"].tolist()
    assert result["score"].tolist() == [rounded(100 * s, 2, top=100.0) for s in table["score"]]
    assert result["match"].tolist() == (table["confident"] & (table["rank"] == 1)).tolist()
    assert all(types == INFO.types for types in result["type"])


def test_concurrent_clients_get_complete_answers_equal_to_the_lookup(server, retriever):
    batches = [{f"q{j}": {"query": OPENREFINE_ALIASES[(i + j) % 10] + ("" if i % 2 else " University"), "limit": 3}
                for j in range(10)} for i in range(12)]
    wanted = [expected(retriever, batch) for batch in batches]

    def client_run(offset: int) -> list:
        with httpx.Client(base_url=server, timeout=60) as http:
            return [(i, http.post("/reconcile", data={"queries": json.dumps(batches[i])}))
                    for i in range(offset, len(batches), 4)]

    with ThreadPoolExecutor(4) as pool:
        answers = [pair for run in pool.map(client_run, range(4)) for pair in run]
    assert len(answers) == len(batches)
    for i, response in answers:
        assert response.status_code == 200 and response.json() == wanted[i]


def test_the_server_process_survives_bad_input(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        for body in ({"queries": "{broken"}, {"queries": "[]"}, {"queries": json.dumps({"q": {"query": 1}})},
                     {"queries": json.dumps({f"q{i}": {"query": "x"} for i in range(50)})}):
            assert http.post("/reconcile", data=body).status_code in (400, 413)
        assert http.get("/preview", params={"id": "nope"}).status_code == 404
        assert http.post("/reconcile", content=b"queries=\xff\xfe", headers={
            "Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
        answer = http.post("/reconcile", files={"queries": (None, json.dumps({"q0": {"query": "MIT"}}))})
        assert answer.status_code == 200 and answer.json()["q0"]["result"]  # multipart, as some clients send
        assert http.get("/reconcile").json()["batchSize"] == 12


def test_serve_refuses_a_taken_port_before_loading_the_model(home, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            run_main(serve_cli.main, serve_cli.parse_args(["--port", str(port), "--model", str(home / "nothing")]))
    assert exit_info.value.code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text and "pick another --port" in caplog.text


def test_serve_flags_are_checked(capsys):
    for flags, message in ((["--batch-size", "0"], "--batch-size must be at least 1"),
                           (["--port", "70000"], "--port must be between 1 and 65535")):
        with pytest.raises(SystemExit):
            serve_cli.parse_args(flags)
        assert message in capsys.readouterr().err


def test_a_missing_model_is_a_clear_error_not_a_traceback(home):
    with pytest.raises(UserError, match="giant"):
        serve_cli.build_app(serve_cli.parse_args(["--model", str(home / "giant")]))


def test_an_unexpected_failure_is_a_json_500_with_cors_and_the_service_goes_on(retriever):
    class Failing:
        """A retriever whose lookups fail once."""

        def __init__(self, inner):
            self.inner, self.failed = inner, False

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def lookup(self, *args, **kwargs):
            if not self.failed:
                self.failed = True
                raise RuntimeError("disk vanished")
            return self.inner.lookup(*args, **kwargs)

    client = TestClient(create_app(Failing(retriever), INFO))
    broken = client.post("/reconcile", data={"queries": json.dumps({"q0": {"query": "MIT"}})},
                         headers={"Origin": "http://localhost:3333"})
    assert broken.status_code == 500 and broken.headers["access-control-allow-origin"] == "*"
    assert broken.json() == {"status": "error", "message": "internal error; the server log has the details"}
    assert reconcile(client, {"q0": {"query": "MIT"}}).json()["q0"]["result"]
