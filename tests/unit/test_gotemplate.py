"""The Go text/template engine, table-driven. Every expected string and error message in the tables
below was produced by Go 1.27's text/template on the same template and data (JSON-shaped data; the
``json`` function registered as Ollama registers it), so a mismatch is a divergence from Go."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_torch.templates.gotemplate import (
    ExecError,
    Func,
    ParseError,
    Template,
    TemplateError,
    to_json,
)
from ollama_torch.templates.gotemplate.gofmt import go_quote

FUNCS = {"json": Func(to_json)}

DATA: dict[str, Any] = {
    "A": "a",
    "B": "",
    "N": 3,
    "F": 2.5,
    "Big": 1234567.0,
    "L": [1, "x", None, True],
    "E": [],
    "M": {"b": 1, "a": [1, 2], "c": None, "d": {"x": "y"}},
    "Z": None,
    "S": 'héllo <&> "q"',
    "Msgs": [
        {"Role": "system", "Content": "sys"},
        {"Role": "user", "Content": "hi"},
        {"Role": "assistant", "Content": "yo"},
    ],
}


def render(text: str, data: Any = None, missingkey: Any = "zero") -> str:
    return Template.parse(text, FUNCS, missingkey=missingkey).execute(DATA if data is None else data)


RENDER: list[tuple[str, str]] = [
    # fields, missing values and Go's printing of values
    ("{{ .A }}", "a"),
    ("{{.B}}|{{.N}}|{{.F}}|{{.Big}}", "|3|2.5|1.234567e+06"),
    ("{{ .L }}", "[1 x <nil> true]"),
    ("{{ .E }}", "[]"),
    ("{{ .M }}", "map[a:[1 2] b:1 c:<nil> d:map[x:y]]"),
    ("{{ .Z }}|{{ .Missing }}|{{ .M.c }}", "<no value>|<no value>|<no value>"),
    ("{{ .M.d.x }}", "y"),
    ("{{ (.Missing).x }}|{{ $x := .Missing }}{{ $x.y }}", "<no value>|<no value>"),
    (
        "{{ . }}",
        "map[A:a B: Big:1.234567e+06 E:[] F:2.5 L:[1 x <nil> true] M:map[a:[1 2] b:1 c:<nil> d:map[x:y]] "
        'Msgs:[map[Content:sys Role:system] map[Content:hi Role:user] map[Content:yo Role:assistant]] N:3 S:héllo <&> "q" Z:<nil>]',
    ),
    # whitespace trimming and comments
    ("a  {{- .A -}}  b", "aab"),
    ("a\n\n  {{- .A }}  \n\n{{- .A -}}\n\nb", "aaab"),
    ("a\n{{- .A }} \n {{ .A }}\n", "aa \n a\n"),
    ("x{{/* comment */}}y|x {{- /* c */}} y|x {{/* c */ -}} y", "xy|x y|x y"),
    ("{{- /* a\nb */ -}}", ""),
    ("{{\n.A\n}}", "a"),
    ("{{ -3 }}{{ +4 }}", "-34"),
    # literals
    (
        "{{ 0x1F }} {{ 1e3 }} {{ 1.50 }} {{ 'a' }} {{ 0b101 }} {{ 0o17 }} {{ 017 }} {{ 1_000 }}",
        "31 1000 1.5 97 5 15 15 1000",
    ),
    ('{{ "a\\tb\\u00e9\\x41" }}{{ `raw\\n` }}{{ true }}{{ false }}', "a\tbéAraw\\ntruefalse"),
    # variables
    ("{{ $x := 1 }}{{ $x }}{{ $x = 2 }}{{ $x }}", "12"),
    ('{{ $x := .A }}{{ if .N }}{{ $x = "in" }}{{ end }}{{ $x }}', "in"),
    ("{{ $x := 0 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}", "true"),
    ("{{ $.A }}{{ range .Msgs }}{{ $.A }}{{ .Role }}{{ end }}", "aasystemauseraassistant"),
    ("{{ with $x := .M.d }}{{ $x.x }}{{ .x }}{{ end }}", "yy"),
    # if / else if / else, with / else
    ("{{ if .B }}b{{ else if .Z }}z{{ else if .N }}n{{ else }}none{{ end }}", "n"),
    ("{{ if .B }}b{{ else if .Z }}z{{ else }}none{{ end }}", "none"),
    ("{{ if .E }}e{{ else }}{{ if not .M }}m{{ else }}{{ .A }}{{ end }}{{ end }}", "a"),
    ("{{ with .A }}{{ . }}{{ end }}|{{ with .B }}x{{ else }}empty{{ end }}", "a|empty"),
    ("{{ with .B }}x{{ else with .A }}{{ . }}{{ end }}", "a"),
    # range
    ("{{ range .L }}[{{ . }}]{{ end }}", "[1][x][<no value>][true]"),
    ("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}", "0=1;1=x;2=<no value>;3=true;"),
    ("{{ range .E }}x{{ else }}empty{{ end }}|{{ range .Z }}x{{ else }}nil{{ end }}", "empty|nil"),
    ("{{ range $k, $v := .M }}{{ $k }}:{{ $v }} {{ end }}", "a:[1 2] b:1 c:<no value> d:map[x:y] "),
    ("{{ range 3 }}{{ . }}{{ end }}|{{ range 0 }}x{{ else }}none{{ end }}", "012|none"),
    (
        '{{ range .Msgs }}{{ if eq .Role "user" }}{{ continue }}{{ end }}{{ .Role }};{{ end }}',
        "system;assistant;",
    ),
    ("{{ range .L }}{{ if not . }}{{ break }}{{ end }}{{ . }},{{ end }}", "1,x,"),
    ("{{ range $i, $v := .L }}{{ if gt $i 0 }}, {{ end }}{{ $v }}{{ end }}", "1, x, <no value>, true"),
    # define / template / block
    ('{{ define "t" }}[{{ . }}]{{ end }}{{ template "t" .A }}{{ template "t" }}', "[a][<no value>]"),
    ('{{ block "b" .N }}<{{ . }}>{{ end }}', "<3>"),
    # pipelines and parentheses
    ('{{ .A | printf "%s!" }}|{{ .N | printf "%v %v" 1 }}|{{ "x" | len }}', "a!|1 3|1"),
    ("{{ (.A) }}{{ (len .L) }}{{ (.M).d }}|{{ (index .Msgs 0).Role }}", "a4map[x:y]|system"),
    # comparisons, logic
    ("{{ and .A .B .N }}|{{ or .B .Z .N }}|{{ or .B .Z }}|{{ and 1 2 }}", "|3|<no value>|2"),
    ("{{ or .A .Z.x }}|{{ if and .Z .Z.x }}y{{ else }}n{{ end }}", "a|n"),
    ("{{ not .B }}{{ not .A }}", "truefalse"),
    (
        '{{ eq .A "a" }}{{ eq .A "b" "c" "a" }}{{ eq .N 3 }}{{ eq .Z nil }}{{ ne .A "b" }}',
        "truetruetruetruetrue",
    ),
    ('{{ lt 1 2 }}{{ le 2 2 }}{{ gt "b" "a" }}{{ ge 1.5 2.5 }}', "truetruetruefalse"),
    # len / index / slice (len and string indexes count bytes, as in Go)
    ("{{ len .L }}{{ len .S }}{{ len .M }}", "4144"),
    (
        '{{ index .L 1 }}{{ index .M "b" }}{{ index .M "nope" }}|{{ index .S 0 }}|{{ index .Msgs 1 "Role" }}',
        "x1<no value>|104|user",
    ),
    ("{{ slice .L 1 3 }}{{ slice .S 1 3 }}{{ slice .L 2 }}", "[x <nil>]é[<nil> true]"),
    # print, println, printf
    ('{{ print 1 2 "a" "b" 3 nil .Z }}', "1 2ab3 <nil> <nil>"),
    ('{{ println 1 "a" }}', "1 a\n"),
    ('{{ printf "%d-%s-%v-%q-%t" 1 "s" .L "q" true }}', '1-s-[1 x <nil> true]-"q"-true'),
    ('{{ printf "%5.2f|%x|%X|%o|%c" 3.14159 255 "hi" 8 65 }}', " 3.14|ff|6869|10|A"),
    (
        '{{ printf "%06.2f|%-6d|%+d|% d|%#x|%#o|%08b" 1.5 42 5 5 255 8 5 }}',
        "001.50|42    |+5| 5|0xff|010|00000101",
    ),
    (
        '{{ printf "%e|%E|%g|%G|%.3e|%.10g" 123456.789 0.000123 1e21 1e-7 1.0 3.3 }}',
        "1.234568e+05|1.230000E-04|1e+21|1E-07|1.000e+00|3.3",
    ),
    ('{{ printf "%v|%v|%v" 1e6 100000.0 0.0001 }}', "1e+06|100000|0.0001"),
    (
        '{{ printf "%d" "x" }}|{{ printf "%s %s" 1 }}|{{ printf "%d\\n" 1 "a" }}',
        "%!d(string=x)|%!s(int=1) %!s(MISSING)|1\n%!(EXTRA string=a)",
    ),
    ('{{ printf "%T %T %T" .N .L .M }}', "int []interface {} map[string]interface {}"),
    ('{{ printf "%*d|%-*d|%.*f" 5 1 4 2 2 3.14159 }}', "    1|2   |3.14"),
    ('{{ printf "%U|%q|%c" 0x1F600 0x1F600 0x1F600 }}', "U+1F600|'😀'|😀"),
    ('{{ printf "%.2s|%5.1s|%-5s|" "héllo" "abc" "x" }}', "hé|    a|x    |"),
    # escaping functions
    (
        "{{ html .S }}|{{ js .S }}|{{ urlquery .S }}",
        'héllo &lt;&amp;&gt; &#34;q&#34;|héllo \\u003C\\u0026\\u003E \\"q\\"|h%C3%A9llo+%3C%26%3E+%22q%22',
    ),
    ('{{ js "a\\nb=" }}', "a\\u000Ab\\u003D"),
    # json (Go's encoding/json: sorted keys, HTML escaped, Go number format)
    (
        "{{ json .M }}|{{ json .S }}|{{ json .L }}|{{ json .Big }}",
        '{"a":[1,2],"b":1,"c":null,"d":{"x":"y"}}|"héllo \\u003c\\u0026\\u003e \\"q\\""|[1,"x",null,true]|1234567',
    ),
]


@pytest.mark.parametrize(("text", "want"), RENDER, ids=[t for t, _ in RENDER])
def test_render(text: str, want: str) -> None:
    assert render(text) == want


PARSE_ERRORS: list[tuple[str, str]] = [
    ("{{ .Prompt ", "template: :1: unclosed action"),
    ("{{ .A }", 'template: :1: unexpected "}" in operand'),
    ("{{ foo }}", 'template: :1: function "foo" not defined'),
    ("{{ $x }}", 'template: :1: undefined variable "$x"'),
    ("{{ if .A }}x", "template: :1: unexpected EOF"),
    ("{{ end }}", "template: :1: unexpected {{end}}"),
    ("{{ .A | 3 }}", "template: :1: non executable command in pipeline stage 2"),
    ("{{ if }}", "template: :1: missing value for if"),
    ("{{ break }}", "template: :1: {{break}} outside {{range}}"),
    ("{{ range .L }}{{ else }}{{ break }}{{ end }}", "template: :1: {{break}} outside {{range}}"),
    ("{{ .A ) }}", "template: :1: unexpected right paren"),
    ("{{ ( .A }}", "template: :1: unclosed left paren"),
    ('{{ "unterminated }}', "template: :1: unterminated quoted string"),
    ("{{ 'ab' }}", "template: :1: malformed character constant: 'ab'"),
    ("{{ 1a }}", 'template: :1: bad number syntax: "1a"'),
    ("{{ 99999999999999999999 }}", 'template: :1: integer overflow: "99999999999999999999"'),
    ("{{/* unclosed", "template: :1: unclosed comment"),
    ("{{/* a */ x }}", "template: :1: comment ends before closing delimiter"),
    ("line1\n{{ .A\n }}\nline3 {{ bad }}", 'template: :4: function "bad" not defined'),
    ("{{ if .A }}\n{{ else }}\n{{ else }}{{ end }}", "template: :3: expected end; found {{else}}"),
    (
        '{{ define "x" }}y{{ end }}{{ define "x" }}z{{ end }}',
        'template: :1: template: multiple definition of template "x"',
    ),
    (
        '{{ block "x" . }}{{ .A }}{{ end }}{{ define "x" }}B{{ end }}',
        'template: :1: template: multiple definition of template "x"',
    ),
    ("{{ $x, $y := 1 }}", "template: :1: too many declarations in command"),
    ("{{ range $x, 1 }}{{ end }}", "template: :1: range can only initialize variables"),
    ("{{ ..x }}", 'template: :1: unexpected . after term "."'),
    ("{{ é }}", 'template: :1: function "é" not defined'),
    ("{{ → }}", "template: :1: unrecognized character in action: U+2192 '→'"),
]


@pytest.mark.parametrize(("text", "message"), PARSE_ERRORS, ids=[t for t, _ in PARSE_ERRORS])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError) as e:
        Template.parse(text, FUNCS)
    assert str(e.value) == message
    assert isinstance(e.value, TemplateError)


EXEC_ERRORS: list[tuple[str, str]] = [
    ("{{ .M.c.x }}", 'template: :1:5: executing "" at <.M.c.x>: nil pointer evaluating interface {}.x'),
    (
        "{{ .Missing.x }}",
        'template: :1:11: executing "" at <.Missing.x>: nil pointer evaluating interface {}.x',
    ),
    ("{{ .A.x }}", 'template: :1:5: executing "" at <.A.x>: can\'t evaluate field x in type interface {}'),
    (
        "{{ index .L 9 }}",
        'template: :1:3: executing "" at <index .L 9>: error calling index: index out of range: 9',
    ),
    (
        "{{ slice .L 3 1 }}",
        'template: :1:3: executing "" at <slice .L 3 1>: error calling slice: invalid slice index: 3 > 1',
    ),
    ("{{ len .N }}", 'template: :1:3: executing "" at <len .N>: error calling len: len of type int'),
    (
        '{{ lt 1 "a" }}',
        'template: :1:3: executing "" at <lt 1 "a">: error calling lt: incompatible types for comparison: int and string',
    ),
    (
        "{{ eq .N 3.0 }}",
        'template: :1:3: executing "" at <eq .N 3.0>: error calling eq: incompatible types for comparison: int and float64',
    ),
    (
        "{{ eq 1 }}",
        'template: :1:3: executing "" at <eq 1>: error calling eq: missing argument for comparison',
    ),
    ("{{ not }}", 'template: :1:3: executing "" at <not>: wrong number of args for not: want 1 got 0'),
    ("{{ printf 3 }}", 'template: :1:10: executing "" at <3>: expected string; found 3'),
    (
        "{{ printf .N }}",
        'template: :1:10: executing "" at <.N>: wrong type for value; expected string; got int',
    ),
    ("{{ range .A }}{{ end }}", 'template: :1:9: executing "" at <.A>: range can\'t iterate over a'),
    (
        "{{ range $i, $j := 3 }}{{ end }}",
        'template: :1:19: executing "" at <3>: can\'t use 3 to iterate over more than one variable',
    ),
    (
        '{{ template "nope" }}',
        'template: :1:12: executing "" at <{{template "nope"}}>: template "nope" not defined',
    ),
    ("{{ .A 1 }}", 'template: :1:3: executing "" at <.A>: A is not a method but has arguments'),
    ("{{ 1 2 }}", 'template: :1:3: executing "" at <1>: can\'t give argument to non-function 1'),
    ("{{ nil }}", 'template: :1:3: executing "" at <nil>: nil is not a command'),
    (
        "{{ call .A }}",
        'template: :1:3: executing "" at <call .A>: error calling call: non-function .A of type string',
    ),
    (
        '{{ define "a" }}\n  {{ .N.x }}{{ end }}{{ template "a" . }}',
        'template: :2:7: executing "a" at <.N.x>: can\'t evaluate field x in type interface {}',
    ),
]


@pytest.mark.parametrize(("text", "message"), EXEC_ERRORS, ids=[t for t, _ in EXEC_ERRORS])
def test_exec_errors(text: str, message: str) -> None:
    with pytest.raises(ExecError) as e:
        render(text)
    assert str(e.value) == message


def test_missingkey_default_reaches_through_missing_values() -> None:
    # Go's default option yields an invalid value for a missing key; only missingkey=zero fails.
    assert render("{{ .Missing.x }}", missingkey="default") == "<no value>"


@dataclass
class Fn:
    Name: str
    Args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Call:
    ID: str
    Function: Fn

    GO_METHODS: ClassVar[dict[str, str]] = {"Describe": "describe"}

    def describe(self, prefix: str = "") -> str:
        return f"{prefix}{self.Function.Name}()"


class Args(dict[str, Any]):
    def go_string(self) -> str:
        return "ARGS"


def test_structs_methods_and_stringers() -> None:
    call = Call("c1", Fn("get", Args(b=1)))
    t = '{{ .ID }} {{ .Function.Name }} {{ .Function.Args }} {{ .Function }} {{ .Describe }} {{ .Describe "x." }}'
    assert Template.parse(t).execute(call) == "c1 get ARGS {get ARGS} get() x.get()"
    with pytest.raises(ExecError, match="can't evaluate field Nope in type Call"):
        Template.parse("{{ .Nope }}").execute(call)
    assert Template.parse('{{ printf "%+v" . }}').execute(call) == "{ID:c1 Function:{Name:get Args:ARGS}}"


def test_call_runs_a_function_value() -> None:
    assert Template.parse("{{ call .F 2 3 }}").execute({"F": lambda a, b: a * b}) == "6"


def test_custom_function_arity_and_types() -> None:
    funcs = {"twice": Func(lambda s: s + s, ("string",))}
    assert Template.parse('{{ twice "ab" }}{{ "c" | twice }}', funcs).execute(None) == "ababcc"
    with pytest.raises(ExecError, match="wrong number of args for twice: want 1 got 2"):
        Template.parse('{{ twice "a" "b" }}', funcs).execute(None)


def test_defined_templates_are_exposed() -> None:
    t = Template.parse('{{ define "a" }}A{{ end }}{{ block "b" . }}B{{ end }}x')
    assert sorted(t.trees) == ["", "a", "b"]
    assert str(t.trees["a"]) == "A"
    assert str(t.root) == '{{template "b" .}}x'


# --- properties -----------------------------------------------------------------------------------

_no_action = st.text().filter(lambda s: "{{" not in s)


@given(_no_action)
def test_text_without_actions_renders_to_itself(text: str) -> None:
    assert Template.parse(text).execute({}) == text


@given(st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)))
def test_go_quoted_string_literals_round_trip(s: str) -> None:
    assert Template.parse("{{ " + go_quote(s) + " }}").execute(None) == s


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers_print_like_go(n: int) -> None:
    assert Template.parse(f'{{{{ {n} }}}}|{{{{ printf "%d" . }}}}').execute(n) == f"{n}|{n}"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (
            '{{ define "x" }}{{ template "x" . }}{{ end }}{{ template "x" . }}',
            ExecError,
            "exceeded maximum template depth",
        ),
        ("{{ if 1 }}" * 400 + "{{ end }}" * 400, ParseError, "nesting too deep"),
        ("{{ " + "(" * 150 + "1" + ")" * 150 + " }}", ParseError, "max expression depth exceeded"),
    ],
    ids=["recursive-template", "deep-ifs", "deep-parens"],
)
def test_runaway_templates_fail_cleanly(text: str, error: type[TemplateError], message: str) -> None:
    with pytest.raises(error, match=message):
        Template.parse(text).execute(1)


def test_the_nesting_limit_holds_whatever_the_recursion_limit() -> None:
    """torch.compile raises Python's recursion limit for the whole process; the parser's own limit stays."""
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        with pytest.raises(ParseError, match="nesting too deep"):
            Template.parse("{{ if 1 }}" * 400 + "{{ end }}" * 400)
    finally:
        sys.setrecursionlimit(old)
    assert Template.parse("{{ if 1 }}" * 99 + "x" + "{{ end }}" * 99).execute(1) == "x"
