"""What the HTTP layer of the reconciliation service costs: concurrent clients against in-process lookups.

First the same batches are looked up in this process, one after the other, through the function
the service answers with (the baseline, and every answer's expected content). Then scripts/serve.py
starts on a free port of 127.0.0.1 and ``--clients`` threads each send their share of the batches,
form-encoded as OpenRefine sends them. Every answer is checked against the in-process one; a
non-200 status, a transport error or a different answer counts as an error. Reported: throughput
(queries/s) of both, p50 and p99 batch latency over HTTP, the error count, and their ratio.

Reads   data/processed/ (the test aliases), the chosen model folder and its indexes
Writes  benchmarks/results/serve.json

Example:
    python benchmarks/serve_load.py --model student --clients 8 --batches 100
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from harness import save_results

from alias_label import load_retriever
from alias_label.data.split import load_split
from alias_label.serve.local import local_service
from alias_label.serve.protocol import DEFAULT_LIMIT, answer, parse_batch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher", help="teacher, student or a model folder (default: teacher)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--batches", type=int, default=100, help="batches each client sends (default: 100)")
    parser.add_argument("--batch-queries", type=int, default=10,
                        help="queries in a batch (default: 10, what OpenRefine sends)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample of test aliases")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def make_batches(args) -> list[str]:
    """``clients x batches`` batches of distinct test aliases, as the JSON a client sends."""
    aliases = load_split().pairs("test")["alias"].drop_duplicates().to_numpy()
    order = np.random.default_rng(args.seed).permutation(len(aliases))
    total = args.clients * args.batches
    picks = [aliases[order[(i * args.batch_queries + j) % len(aliases)]]
             for i in range(total) for j in range(args.batch_queries)]
    return [json.dumps({f"q{j}": {"query": picks[i * args.batch_queries + j]} for j in range(args.batch_queries)})
            for i in range(total)]


def in_process(retriever, batches: list[str]) -> tuple[float, list[dict]]:
    """Seconds for every batch through the service's own answer function, and the answers."""
    types = [{"id": "entity", "name": "Entity"}]
    answer(retriever.lookup, parse_batch(batches[0], 10_000), types)  # warm-up
    start = time.perf_counter()
    answers = [answer(retriever.lookup, parse_batch(batch, 10_000), types) for batch in batches]
    return time.perf_counter() - start, answers


def over_http(url: str, batches: list[str], wanted: list[dict], clients: int) -> tuple[float, list[float], int]:
    """Seconds for every batch sent by ``clients`` threads, each batch's latency (ms), and the errors."""
    def client(offset: int) -> tuple[list[float], int]:
        latencies, errors = [], 0
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(offset, len(batches), clients):
                start = time.perf_counter()
                try:
                    response = http.post("/reconcile", data={"queries": batches[i]})
                    ok = response.status_code == 200 and response.json() == wanted[i]
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - start) * 1000)
                errors += not ok
        return latencies, errors

    with httpx.Client(base_url=url, timeout=120) as http:  # warm-up
        http.post("/reconcile", data={"queries": batches[0]})
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        runs = list(pool.map(client, range(clients)))
    seconds = time.perf_counter() - start
    return seconds, [ms for latencies, _ in runs for ms in latencies], sum(errors for _, errors in runs)


def main(args: argparse.Namespace) -> dict:
    batches = make_batches(args)
    queries = len(batches) * args.batch_queries
    retriever = load_retriever(args.model)
    local_seconds, wanted = in_process(retriever, batches)
    del retriever
    with local_service(["--model", args.model, "--batch-size", str(args.batch_queries)]) as url:
        http_seconds, latencies, errors = over_http(url, batches, wanted, args.clients)
    figures = {
        "model": args.model, "clients": args.clients, "batches": len(batches), "batch_queries": args.batch_queries,
        "limit": DEFAULT_LIMIT,
        "in_process_queries_per_s": queries / local_seconds,
        "http_queries_per_s": queries / http_seconds,
        "http_batch_p50_ms": float(np.percentile(latencies, 50)),
        "http_batch_p99_ms": float(np.percentile(latencies, 99)),
        "errors": errors,
    }
    figures["http_vs_in_process"] = figures["http_queries_per_s"] / figures["in_process_queries_per_s"]
    figures["http_overhead"] = 1 - figures["http_vs_in_process"]
    save_results("serve", figures, args.results_dir)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(parse_args())
