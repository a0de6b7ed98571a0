"""The metric list of ``docs/metrics.md``, generated from the services' ``/metrics`` text.

``tests/integration/test_prometheus_federation.py`` scrapes the running services, renders the
list with :func:`render` and compares it with the section between :data:`BEGIN` and :data:`END`
in the docs; with ``FRAUDFL_UPDATE_METRICS_DOC=1`` it rewrites that section instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

BEGIN = "<!-- BEGIN generated: live scrape (tests/monitoring/metrics_catalog.py) -->"
END = "<!-- END generated: live scrape -->"
# Labels Prometheus adds per series kind rather than per metric.
_STRUCTURAL_LABELS = {"le", "quantile"}


@dataclass
class Family:
    name: str
    type: str
    help: str
    labels: set[str] = field(default_factory=set)
    components: set[str] = field(default_factory=set)


def exported_name(name: str, kind: str) -> str:
    """The name as queried: the client parser strips a counter's ``_total``."""
    return f"{name}_total" if kind == "counter" else name


def collect(scrapes: Mapping[str, Iterable[str]]) -> dict[str, Family]:
    """Families by exported name from ``{component: [exposition text, ...]}``.

    ``_created`` timestamps (exposed as gauges of their own) are left out: every counter and
    histogram has one.
    """
    out: dict[str, Family] = {}
    for component, texts in scrapes.items():
        for text in texts:
            for fam in text_string_to_metric_families(text):
                if fam.name.endswith("_created"):
                    continue
                name = exported_name(fam.name, fam.type)
                entry = out.setdefault(name, Family(name, fam.type, fam.documentation))
                entry.components.add(component)
                for sample in fam.samples:
                    entry.labels |= set(sample.labels) - _STRUCTURAL_LABELS
    return out


def render(families: Mapping[str, Family]) -> str:
    """Markdown: a table of the ``fraudfl_*`` families, then the default collectors' names."""
    # Families every component exports first, then each component's own.
    ours = sorted((f for f in families.values() if f.name.startswith("fraudfl_")),
                  key=lambda f: (-len(f.components), _component_order(f.components), f.name))
    lines = [
        BEGIN,
        "",
        "| name | type | labels | exported by | help |",
        "|---|---|---|---|---|",
    ]
    for fam in ours:
        labels = ", ".join(sorted(fam.labels)) or "-"
        by = ", ".join(sorted(fam.components, key=_COMPONENTS.index))
        lines.append(f"| `{fam.name}` | {fam.type} | {labels} | {by} | {fam.help} |")
    others = [f for f in families.values() if not f.name.startswith("fraudfl_")]
    by = ", ".join(sorted(set().union(*(f.components for f in others)), key=_COMPONENTS.index))
    lines += ["", f"prometheus-client's default collectors ({by}):", ""]
    lines += [", ".join(f"`{n}`" for n in sorted(f.name for f in others)), "", END]
    return "\n".join(lines)


def replace_section(doc: str, section: str) -> str:
    """``doc`` with the generated section replaced by ``section`` (markers included)."""
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    return doc[:start] + section + doc[end:]


def current_section(doc: str) -> str:
    return doc[doc.index(BEGIN) : doc.index(END) + len(END)]


_COMPONENTS = ["aggregator", "bank-node", "scoring"]


def _component_order(components: set[str]) -> int:
    return min(_COMPONENTS.index(c) for c in components)
