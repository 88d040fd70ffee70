"""(query, document) pairs for retrieval scoring: the embedded held-out pairs or a user's JSONL.

Read by ``pc eval --pairs`` and by the heal's step selection (``--heal-select-pairs``); the JSONL
reader here is the one every evaluation file goes through (one message per kind of bad line).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import PCError

EMBEDDED = "embedded"
EMBEDDED_PAIRS = Path(str(files("prune_compensate") / "data")) / "default_eval_pairs.jsonl"


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(origin, record)`` for each non-empty line of a JSONL file, ``origin`` as ``path:line``."""
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                origin = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise PCError(
                        f"line {origin} is not valid JSON ({err.msg})", "write one JSON object per line"
                    ) from err
                if not isinstance(record, dict):
                    raise PCError(f"line {origin} is not a JSON object", "write one JSON object per line")
                rows.append((origin, record))
    except UnicodeDecodeError as err:
        raise PCError(f"{path} is not UTF-8 text", "pass a UTF-8 JSONL or text file") from err
    except FileNotFoundError as err:
        raise PCError(f"evaluation data {path} does not exist", "check the path") from err
    if not rows:
        raise PCError(f"evaluation data {path} holds no examples", "add at least one line")
    return rows


def string_field(origin: str, record: dict[str, Any], names: tuple[str, ...]) -> str:
    """The first of ``names`` that ``record`` holds as a string; one clear error otherwise."""
    for name in names:
        if isinstance(record.get(name), str):
            return record[name]
    raise PCError(f"line {origin} has no string field {' or '.join(map(repr, names))}", "add it to every line")


def read_pairs(source: str) -> list[tuple[str | None, str]]:
    """(query, document) pairs: ``embedded`` or a JSONL file with ``query`` and ``document`` per
    line; a line with a ``document`` only adds a distractor to the corpus (a negative for every
    query)."""
    path = EMBEDDED_PAIRS if source == EMBEDDED else Path(source)
    pairs: list[tuple[str | None, str]] = []
    for origin, record in read_records(path):
        query = string_field(origin, record, ("query",)) if "query" in record else None
        pairs.append((query, string_field(origin, record, ("document",))))
    if not any(query is not None for query, _ in pairs):
        raise PCError(f"{path} has no line with a 'query'", "add (query, document) pairs")
    return pairs
