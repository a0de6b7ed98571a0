"""Metric names referenced by a PromQL expression (enough of PromQL for dashboards and rules)."""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
# An identifier not glued to a number (``1e3``, ``5m``) and not a function call.
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
}
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """Names of the series selected by ``expr`` (functions, labels and keywords excluded)."""
    text = _STRING.sub('""', expr)
    text = _BRACKETS.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _GROUPING.sub("", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


def template_query_metric_names(query: str) -> set[str]:
    """Names in a Grafana Prometheus variable query (``label_values(metric{...}, label)``)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        return metric_names(query)
    args = _MATCHERS.sub("", match.group(1)).split(",")
    # label_values(label) has no metric; label_values(selector, label) names one.
    return metric_names(args[0]) if len(args) == 2 else set()
