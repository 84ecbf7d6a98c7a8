"""Helpers for the deploy tests: metric names in PromQL, and the rule and rule-test files.

No YAML parser is a dependency of callpark, so the rule files are read with a small line
parser that understands exactly the layout of ``deploy/prometheus/*.yml`` (``- alert:``
items, ``expr: |`` block scalars, one-line double-quoted annotations). It refuses
anything else, and the tests cross-check its rule count against ``promtool check rules``,
so a rule it cannot see fails a test instead of escaping the metric-name check.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTS_FILE = PROMETHEUS_DIR / "alerts.yml"
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
DASHBOARD_FILE = REPO / "deploy" / "grafana" / "callpark-dashboard.json"
OPERATIONS_DOC = REPO / "docs" / "OPERATIONS.md"

# PromQL 2.42: functions, aggregation operators and keywords (never metric names here).
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
        "histogram_quantile",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
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
    ]
)
AGGREGATORS = frozenset(
    ["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"]
)
KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "atan2",
        "inf",
        "nan",
        "start",
        "end",
    ]
)
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([A-Za-z_:][A-Za-z0-9_:]*)"')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")

# Grafana's built-in and dashboard variables, replaced before PromQL sees an expression.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$pool": ".*",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (by bare name or an exact ``__name__`` matcher).

    >>> sorted(metric_names('sum by (pool) (rate(a_total{pool=~"x"}[5m])) / on (pool) b offset 15m'))
    ['a_total', 'b']
    """
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub("0", text)
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", "", text)  # range and subquery durations
    text = _GROUPING.sub(r"\1", text)  # label lists of by/on/ignoring/group_left...
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word in FUNCTIONS or word in AGGREGATORS or word in KEYWORDS:
            continue
        names.add(word)
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so Prometheus can parse it."""
    for var, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(var, value)
    leftover = _GRAFANA_VAR.search(expr)
    if leftover:
        raise ValueError(f"unknown Grafana variable {leftover.group(0)} in {expr!r}")
    return expr


# -- the alert rule file ----------------------------------------------------------------


@dataclass
class Rule:
    name: str
    expr: str = ""
    for_: str = "0s"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    group: str = ""


def _scalar(raw: str, where: str) -> str:
    raw = raw.strip()
    if raw.startswith('"'):
        value = json.loads(raw)  # the files use JSON-compatible double-quoted strings only
        if not isinstance(value, str):
            raise ValueError(f"{where}: not a string: {raw}")
        return value
    if raw[:1] in ("'", "|", ">", "{", "[", "&", "*", "!"):
        raise ValueError(f"{where}: unsupported YAML scalar {raw!r}")
    return raw


def parse_rules(text: str) -> list[Rule]:
    """Alerting and recording rules of a rule file written in this repository's layout."""
    lines = text.splitlines()
    rules: list[Rule] = []
    group = ""
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if m := re.match(r"- name:\s*(.+)$", stripped):
            group = _scalar(m.group(1), f"line {i}")
            continue
        if m := re.match(r"- (alert|record):\s*(.+)$", stripped):
            rules.append(Rule(name=_scalar(m.group(2), f"line {i}"), group=group))
            section = ""
            continue
        if not rules:
            continue
        rule = rules[-1]
        if m := re.match(r"expr:\s*(.*)$", stripped):
            head = m.group(1).strip()
            if head in ("|", "|-", ">", ">-"):
                block: list[str] = []
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip(" ")) > indent):
                    block.append(lines[i].strip())
                    i += 1
                rule.expr = (" " if head.startswith(">") else "\n").join(block).strip()
            else:
                rule.expr = _scalar(head, f"line {i}")
            section = ""
        elif m := re.match(r"for:\s*(.+)$", stripped):
            rule.for_ = _scalar(m.group(1), f"line {i}")
        elif stripped in ("labels:", "annotations:"):
            section = stripped[:-1]
        elif section and (m := re.match(r"([A-Za-z_][A-Za-z0-9_]*):\s*(.+)$", stripped)):
            target = rule.labels if section == "labels" else rule.annotations
            target[m.group(1)] = _scalar(m.group(2), f"line {i}")
        elif stripped not in ("groups:", "rules:"):
            raise ValueError(f"line {i}: unexpected line in a rule: {line!r}")
    for rule in rules:
        if not rule.expr:
            raise ValueError(f"rule {rule.name}: no expr found")
    return rules


def alert_rules() -> list[Rule]:
    return parse_rules(ALERTS_FILE.read_text(encoding="utf-8"))


# -- rule unit test files -----------------------------------------------------------------


@dataclass(frozen=True)
class AlertCase:
    file: str
    alertname: str
    eval_time: str
    fires: bool


def parse_alert_cases(text: str, file: str) -> list[AlertCase]:
    """Every ``alert_rule_test`` item: which alert, when, and whether alerts are expected."""
    cases: list[AlertCase] = []
    chunks = re.split(r"^\s*- eval_time:\s*", text, flags=re.M)
    for chunk in chunks[1:]:
        eval_time = chunk.splitlines()[0].strip()
        name = re.search(r"^\s*alertname:\s*(\S+)\s*$", chunk, flags=re.M)
        expect = re.search(r"^\s*exp_alerts:\s*(\[\])?\s*$", chunk, flags=re.M)
        if name is None or expect is None:
            raise ValueError(f"{file}: eval_time {eval_time}: no alertname or exp_alerts")
        fires = expect.group(1) is None
        if fires and "exp_labels:" not in chunk:
            raise ValueError(f"{file}: eval_time {eval_time}: a firing case without exp_labels")
        cases.append(AlertCase(file, name.group(1), eval_time, fires))
    return cases


def all_alert_cases() -> list[AlertCase]:
    cases: list[AlertCase] = []
    for path in RULE_TEST_FILES:
        cases += parse_alert_cases(path.read_text(encoding="utf-8"), path.name)
    return cases


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def doc_anchors(markdown: str) -> set[str]:
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, flags=re.M)}
