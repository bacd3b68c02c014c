"""Timing several systems on the same queries, the systems taking turns a block at a time."""

from __future__ import annotations

from collections.abc import Callable


def taking_turns(systems: dict, queries: list, measure: Callable, block: int = 10) -> dict[str, list]:
    """``measure(system, query)`` for every query and system, the systems taking turns ``block``
    queries at a time.

    A drift in the machine's speed then reaches every system alike, while each system still answers
    several queries in a row, as a server would.
    """
    results = {name: [] for name in systems}
    for start in range(0, len(queries), block):
        for name, system in systems.items():
            results[name] += [measure(system, query) for query in queries[start:start + block]]
    return results
