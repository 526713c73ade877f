"""Generating under the JSONSchemaBench dev schemas through a running server, and judging the outputs.

Shared by ``tests/e2e/test_structured.py`` (a few schemas per split, asserting validity) and
``bench/structured_bench.py`` (all of them, coverage and compliance per split). Every output that ends
with ``done_reason: "stop"`` must validate with ``jsonschema`` (Draft 2020-12 with format checking);
a schema the server refuses must be refused with a 400 naming what it cannot enforce.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

DEV = Path("/work/shared/data/jsonschemabench-dev")
PROMPT_SCHEMA_CHARS = 300  # the prompt shows the start of the schema (short prompts keep prefill cheap)


def split_of(path: Path) -> str:
    """JSONSchemaBench split from a dev-sample file name (``Github_easy---o1.json``, ``BFCL_simple_61.json``)."""
    stem = path.stem
    return stem.split("---")[0] if "---" in stem else stem.split("_")[0]


@dataclass(frozen=True)
class DevSchema:
    split: str
    name: str
    schema: dict[str, Any]


def dev_schemas(per_split: int | None = None, root: Path = DEV) -> list[DevSchema]:
    """The dev sample (sorted by file name), at most ``per_split`` from each split."""
    out: list[DevSchema] = []
    taken: dict[str, int] = defaultdict(int)
    for path in sorted(root.glob("*.json")):
        split = split_of(path)
        if per_split is not None and taken[split] >= per_split:
            continue
        schema = json.loads(path.read_text())["schema"]
        if isinstance(schema, dict):
            taken[split] += 1
            out.append(DevSchema(split, path.stem, schema))
    return out


@dataclass
class Outcome:
    schema: DevSchema
    status: str  # "refused" | "stop" | "length" | "error"
    valid: bool | None = None  # for "stop": the output parses and validates
    detail: str = ""  # the 400 message, the validation error, or the server error
    tokens: int = 0
    seconds: float = 0.0
    text: str = ""


def prompt_for(schema: dict[str, Any]) -> str:
    shown = json.dumps(schema, separators=(",", ":"))[:PROMPT_SCHEMA_CHARS]
    return f"Reply with one JSON value that follows this JSON schema: {shown}"


def validate(schema: dict[str, Any], text: str) -> str | None:
    """``None`` when ``text`` is JSON that validates (Draft 2020-12, formats checked), else why not."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    try:
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        error = next(iter(validator.iter_errors(value)), None)
    except (SchemaError, RecursionError) as exc:  # the schema itself is broken: cannot judge
        return f"schema cannot be checked: {exc}"
    return None if error is None else f"{error.message} at {list(error.absolute_path)}"


def run_one(http: httpx.Client, model: str, item: DevSchema, options: dict[str, Any]) -> Outcome:
    started = time.perf_counter()
    body = {"model": model, "prompt": prompt_for(item.schema), "format": item.schema, "stream": False,
            "options": options}
    r = http.post("/api/generate", json=body)
    seconds = time.perf_counter() - started
    if r.status_code == 400:
        return Outcome(item, "refused", detail=r.json().get("error", ""), seconds=seconds)
    if r.status_code != 200:
        return Outcome(item, "error", detail=f"HTTP {r.status_code}: {r.text[:300]}", seconds=seconds)
    data = r.json()
    out = Outcome(item, data.get("done_reason", ""), tokens=data.get("eval_count", 0), seconds=seconds,
                  text=data.get("response", ""))
    if out.status == "stop":
        problem = validate(item.schema, out.text)
        out.valid = problem is None
        out.detail = problem or ""
    return out


def run_many(url: str, model: str, items: Sequence[DevSchema], *, num_predict: int, concurrency: int = 8,
             temperature: float = 0.8) -> list[Outcome]:
    """All ``items`` against ``model``, ``concurrency`` requests at a time (so the server batches them)."""
    with httpx.Client(base_url=url, timeout=900) as http, ThreadPoolExecutor(concurrency) as pool:
        jobs = [pool.submit(run_one, http, model, item,
                            {"temperature": temperature, "seed": i, "num_predict": num_predict})
                for i, item in enumerate(items)]
        return [job.result() for job in jobs]


@dataclass
class SplitRow:
    split: str
    schemas: int = 0
    accepted: int = 0  # not refused: declared coverage
    completed: int = 0  # done_reason "stop"
    valid: int = 0  # completed and valid
    errors: int = 0

    @property
    def coverage(self) -> float:
        return self.accepted / self.schemas if self.schemas else float("nan")

    @property
    def compliance(self) -> float:
        return self.valid / self.completed if self.completed else float("nan")


def summarize(outcomes: Iterable[Outcome]) -> list[SplitRow]:
    rows: dict[str, SplitRow] = {}
    total = SplitRow("**all**")
    for o in outcomes:
        for row in (rows.setdefault(o.schema.split, SplitRow(o.schema.split)), total):
            row.schemas += 1
            row.accepted += o.status != "refused"
            row.completed += o.status == "stop"
            row.valid += o.status == "stop" and bool(o.valid)
            row.errors += o.status == "error"
    return [*(rows[k] for k in sorted(rows)), total]
