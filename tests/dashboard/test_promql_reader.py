"""The PromQL reader behind the dashboard's name and label checks: it must find every metric and label, and take
nothing else for one."""

import pytest
from support.dashboard_promql import PromQLReadError, read


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('rate(foo_total{a="b"}[5m])', {"foo_total"}),
        ("sum by (le) (rate(http_seconds_bucket[1m:15s]))", {"http_seconds_bucket"}),
        ("histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le))", {"x_bucket"}),
        ('{__name__="a_b"} + {__name__=~"c|d_e"}', {"a_b", "c", "d_e"}),
        ("a offset 5m / on (x) group_left (y) b @ 1700000000", {"a", "b"}),
        ("round(sum(increase(r_total[1h]))) or vector(0)", {"r_total"}),
        ("count(x == 1 or y) * 0 + 2 > bool 1", {"x", "y"}),
        ("time() - timestamp(last) and unless_x unless other", {"last", "unless_x", "other"}),
        ('sum by (job_name) (m{job_name=~"rate(sum)|by"}) # a comment naming fake_metric', {"m"}),
        ("topk(3, a) / ignoring(rank) quantile(0.5, b)", {"a", "b"}),
        ("-Inf < nan_metric and NaN != x", {"nan_metric", "x"}),
        ("ns:rule:rate5m", {"ns:rule:rate5m"}),
        ("deriv(s[$window])".replace("$window", "15m"), {"s"}),
        ("max_over_time(a[1h30m]) @ end()", {"a"}),
    ],
)
def test_metric_names_and_nothing_else(expr, names):
    assert read(expr).metric_names == names


def test_selectors_keep_their_matchers():
    (s,) = read('m{a="x", b!="y", c=~"z|w", d!~\'v\',}').selectors
    assert s.name == "m"
    assert [(m.label, m.op, m.value) for m in s.matchers] == [
        ("a", "=", "x"), ("b", "!=", "y"), ("c", "=~", "z|w"), ("d", "!~", "v"),
    ]  # fmt: skip


def test_escaped_quotes_in_values():
    (s,) = read(r'm{a="say \"hi\" (x)"}').selectors
    assert s.matchers[0].value == 'say "hi" (x)'


def test_aggregations_group_over_the_selectors_inside_them():
    r = read('sum by (a) (x) / on (a) max(y{q="1"}) without (b) + count(z)')
    assert [(g.op, g.grouping, g.without) for g in r.aggregations] == [
        ("sum", ["a"], False), ("max", ["b"], True), ("count", [], False),
    ]  # fmt: skip
    assert [[s.name for s in r.selectors_in(g)] for g in r.aggregations] == [["x"], ["y"], ["z"]]
    assert r.matchings == [("on", ["a"])]


def test_nested_aggregations_see_every_selector_below_them():
    r = read("max by (a) (sum by (a, b) (rate(x[5m])) / sum by (a, b) (y))")
    outer = r.aggregations[0]
    assert [s.name for s in r.selectors_in(outer)] == ["x", "y"]


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('label_replace(x, "dst", "$1", "src", "(.*)")', "label_replace"),
        ('count_values("v", x)', "count_values"),
        ("sum(x", "unbalanced"),
        ("sum(x))", "unbalanced"),
        ("nosuchfunction(x)", "unknown function"),
        ('{job="x"}', "without a metric name"),
        ('{__name__=~"a.*"}', "plain alternation"),
        ("x{a=1}", "quoted label value"),
        ("x by (a)", "outside an aggregation"),
        ("sum by (a) (x) by (b)", "second grouping"),
    ],
)
def test_what_it_cannot_place_is_an_error_not_a_skip(expr, why):
    with pytest.raises(PromQLReadError, match=why):
        read(expr)
