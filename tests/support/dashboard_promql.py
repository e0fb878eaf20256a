"""A small PromQL reader for the dashboard tests: which series selectors an expression holds (metric name and
label matchers), which labels its aggregations group by, and which labels its vector matchings (``on``,
``ignoring``, ``group_left``, ``group_right``) name.

It does not judge whether an expression is valid PromQL; promtool does that (test_dashboard.py). It only has to
find names reliably in expressions promtool accepts: function names, aggregation operators, keywords, label
names, numbers, durations and strings are never taken for metric names. Anything it cannot place raises
``PromQLReadError`` rather than being skipped, and so do the functions that create labels from strings
(``label_replace``, ``label_join``, ``count_values``), whose labels this reader would not see."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "exp",
        "floor",
        "group_over_time",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
        "start",
        "end",
    ]
)
#: functions and aggregations that make labels out of string arguments: not followed by this reader
LABEL_MAKERS = frozenset({"label_replace", "label_join", "count_values"})
BINARY_KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset"})
MATCHING_KEYWORDS = frozenset({"on", "ignoring", "group_left", "group_right"})
NUMBER_WORDS = frozenset({"inf", "nan"})

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]\[]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![\w.])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_][a-zA-Z0-9_:]*|:[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|=~|!~|<=|>=|[-+*/%^<>=,(){}@])
    """,
    re.VERBOSE,
)


class PromQLReadError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


@dataclass
class Matcher:
    label: str
    op: str
    value: str


@dataclass
class Selector:
    """One series selector: ``name{matchers}``, or ``{matchers}`` with the name in a ``__name__`` matcher."""

    name: str | None
    matchers: list[Matcher]
    index: int  # token index, to place it inside an aggregation

    @property
    def names(self) -> list[str]:
        """The metric names it can select: its name, or the alternatives of a plain ``__name__`` matcher."""
        if self.name:
            return [self.name]
        for m in self.matchers:
            if m.label == "__name__":
                if m.op == "=":
                    return [m.value]
                if m.op == "=~" and re.fullmatch(r"[a-zA-Z0-9_:|]+", m.value):
                    return m.value.split("|")
                raise PromQLReadError(f"__name__{m.op}{m.value!r}: only = or a plain alternation a|b is read")
        raise PromQLReadError("a selector without a metric name")


@dataclass
class Aggregation:
    op: str
    grouping: list[str] = field(default_factory=list)
    without: bool = False
    start: int = 0  # token index of its '('
    end: int = 0  # token index of its ')'


@dataclass
class Reading:
    expr: str
    selectors: list[Selector]
    aggregations: list[Aggregation]
    matchings: list[tuple[str, list[str]]]  # ("on", ["job_name"]), ("group_left", []), ...
    functions: list[str]

    @property
    def metric_names(self) -> set[str]:
        return {n for s in self.selectors for n in s.names}

    def selectors_in(self, agg: Aggregation) -> list[Selector]:
        return [s for s in self.selectors if agg.start < s.index < agg.end]


def tokenize(expr: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLReadError(f"cannot read {expr[pos : pos + 20]!r} at {pos} in {expr!r}")
        if m.lastgroup not in ("ws", "comment"):
            tokens.append(Token(m.lastgroup, m.group(), pos))
        pos = m.end()
    return tokens


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return ast.literal_eval(text)


class _Reader:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = tokenize(expr)
        self.i = 0

    def peek(self, ahead: int = 0) -> Token | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def text(self, ahead: int = 0) -> str | None:
        t = self.peek(ahead)
        return t.text if t else None

    def fail(self, why: str) -> PromQLReadError:
        t = self.peek()
        where = f"at {t.pos} ({t.text!r})" if t else "at the end"
        return PromQLReadError(f"{why} {where} in {self.expr!r}")

    def expect(self, text: str) -> Token:
        t = self.peek()
        if t is None or t.text != text:
            raise self.fail(f"expected {text!r}")
        self.i += 1
        return t

    def label_list(self) -> list[str]:
        """``( a, b, )`` → ["a", "b"]."""
        self.expect("(")
        labels = []
        while self.text() != ")":
            t = self.peek()
            if t is None or t.kind not in ("ident", "string"):
                raise self.fail("expected a label name")
            labels.append(_unquote(t.text) if t.kind == "string" else t.text)
            self.i += 1
            if self.text() == ",":
                self.i += 1
            elif self.text() != ")":
                raise self.fail("expected ',' or ')'")
        self.i += 1
        return labels

    def matchers(self) -> list[Matcher]:
        """``{ a="x", b=~"y" }``."""
        self.expect("{")
        out = []
        while self.text() != "}":
            t = self.peek()
            if t is None or t.kind not in ("ident", "string"):
                raise self.fail("expected a label name")
            label = _unquote(t.text) if t.kind == "string" else t.text
            self.i += 1
            op = self.peek()
            if op is None or op.text not in ("=", "!=", "=~", "!~"):
                raise self.fail("expected a matcher operator")
            self.i += 1
            value = self.peek()
            if value is None or value.kind != "string":
                raise self.fail("expected a quoted label value")
            self.i += 1
            out.append(Matcher(label, op.text, _unquote(value.text)))
            if self.text() == ",":
                self.i += 1
            elif self.text() != "}":
                raise self.fail("expected ',' or '}'")
        self.i += 1
        return out

    def read(self) -> Reading:
        selectors: list[Selector] = []
        aggregations: list[Aggregation] = []
        matchings: list[tuple[str, list[str]]] = []
        functions: list[str] = []
        parens: list[Aggregation | None] = []  # one entry per open '(': the aggregation it belongs to, if any
        while (t := self.peek()) is not None:
            nxt = self.text(1)
            if t.kind == "ident":
                word = t.text
                if word in LABEL_MAKERS:
                    raise self.fail(f"{word} makes labels from strings; this reader does not follow them")
                if word in AGGREGATIONS and nxt in ("(", "by", "without"):
                    agg = Aggregation(word)
                    aggregations.append(agg)
                    self.i += 1
                    if self.text() in ("by", "without"):
                        agg.without = self.text() == "without"
                        self.i += 1
                        agg.grouping = self.label_list()
                    agg.start = self.i
                    self.expect("(")
                    parens.append(agg)
                    continue
                if word in FUNCTIONS and nxt == "(":
                    functions.append(word)
                    self.i += 2
                    parens.append(None)
                    continue
                if word in ("by", "without"):
                    raise self.fail(f"{word!r} outside an aggregation")
                if nxt == "(" and word not in BINARY_KEYWORDS and word not in MATCHING_KEYWORDS:
                    raise self.fail(f"unknown function {word!r}")
                if word in MATCHING_KEYWORDS:
                    self.i += 1
                    matchings.append((word, self.label_list() if self.text() == "(" else []))
                    continue
                if word in BINARY_KEYWORDS or word.lower() in NUMBER_WORDS:
                    self.i += 1
                    continue
                index = self.i
                self.i += 1
                selectors.append(Selector(word, self.matchers() if self.text() == "{" else [], index))
                continue
            if t.text == "{":
                index = self.i
                selectors.append(Selector(None, self.matchers(), index))
                continue
            if t.text == "(":
                parens.append(None)
            elif t.text == ")":
                if not parens:
                    raise self.fail("unbalanced ')'")
                agg = parens.pop()
                if agg is not None:
                    agg.end = self.i
                    if self.text(1) in ("by", "without"):
                        if agg.grouping:
                            raise self.fail("a second grouping clause")
                        agg.without = self.text(1) == "without"
                        self.i += 2
                        agg.grouping = self.label_list()
                        continue
            elif t.text == "}":
                raise self.fail("unbalanced '}'")
            self.i += 1
        if parens:
            raise PromQLReadError(f"unbalanced '(' in {self.expr!r}")
        for s in selectors:
            s.names  # noqa: B018 - raises on a selector without a readable name
        return Reading(self.expr, selectors, aggregations, matchings, functions)


def read(expr: str) -> Reading:
    return _Reader(expr).read()
