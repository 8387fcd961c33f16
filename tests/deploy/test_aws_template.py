"""deploy/aws/mediagrid.yaml against the code: every metric its alarms, scaling and
dashboard read is one the suite exports, with dimensions the EMF exporter produces."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from common.metrics_export import ROLLUP_KEYS
from services.jobs.queue_metrics import STATES
from services.jobs.states import JobState

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "aws" / "mediagrid.yaml"
INSTRUMENT = re.compile(
    r"create_(counter|histogram|up_down_counter|observable_gauge|observable_counter|gauge)"
    r"\(\s*\"([^\"]+)\"",
    re.MULTILINE,
)
SEARCH_NAME = re.compile(r'MetricName=\\?"([^"\\]+)\\?"')
SELECT_NAME = re.compile(r'SELECT \w+\("([^"]+)"\) FROM mediagrid')


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


CfnLoader.add_multi_constructor("!", _tag)


def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def exported_names() -> set[str]:
    names: set[str] = set()
    for source in [
        *ROOT.joinpath("common").rglob("*.py"),
        *ROOT.joinpath("services").rglob("*.py"),
    ]:
        for kind, name in INSTRUMENT.findall(source.read_text()):
            names.add(name)
            if kind == "histogram":  # the EMF exporter's exact totals beside the values
                names |= {f"{name}.count", f"{name}.sum"}
    return names


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def metric_stats() -> list[dict[str, Any]]:
    """Every {Namespace: mediagrid, MetricName, Dimensions} in alarms and scaling policies."""
    return [
        node
        for node in walk(template()["Resources"])
        if isinstance(node, dict) and node.get("Namespace") == "mediagrid" and "MetricName" in node
    ]


def dashboard() -> dict[str, Any]:
    body = template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    return dict(json.loads(body))


def expressions() -> list[str]:
    found = [
        node["Expression"]
        for node in walk(template()["Resources"])
        if isinstance(node, dict) and isinstance(node.get("Expression"), str)
    ]
    found += [
        metric["expression"]
        for widget in dashboard()["widgets"]
        for row in widget["properties"].get("metrics", [])
        for metric in row
        if isinstance(metric, dict) and "expression" in metric
    ]
    return found


def service_names() -> set[str]:
    return {
        env["Value"]
        for node in walk(template()["Resources"])
        if isinstance(node, dict) and node.get("Name") in ("worker", "users", "jobs", "files")
        for env in node.get("Environment", [])
        if env["Name"] == "MEDIAGRID_SERVICE_NAME"
    }


def test_every_metric_the_template_reads_is_exported() -> None:
    exported = exported_names()
    assert "rpc.server.duration" in exported and "mediagrid.jobs.queue_depth" in exported
    read = {stat["MetricName"] for stat in metric_stats()}
    for expression in expressions():
        read |= set(SEARCH_NAME.findall(expression)) | set(SELECT_NAME.findall(expression))
    read |= {
        row[1]
        for widget in dashboard()["widgets"]
        for row in widget["properties"].get("metrics", [])
        if isinstance(row, list) and row and row[0] == "mediagrid"
    }
    assert len(read) >= 7  # the regexes found the names (none silently skipped)
    assert read <= exported, f"not exported by any instrument: {sorted(read - exported)}"


def test_alarm_dimensions_are_roll_ups_the_exporter_emits() -> None:
    names = service_names()
    assert names == {"mediagrid-users", "mediagrid-jobs", "mediagrid-files", "mediagrid-worker"}
    outcomes = {s.value for s in JobState} | {f"expired_{s.value}" for s in JobState}
    stats = metric_stats()
    assert stats
    for stat in stats:
        dims = {d["Name"]: d["Value"] for d in stat.get("Dimensions", [])}
        assert dims.get("service.name") in names, stat
        extra = set(dims) - {"service.name"}
        assert len(extra) <= 1 and extra <= set(ROLLUP_KEYS), stat
        if "outcome" in dims:
            assert dims["outcome"] in outcomes
        if "state" in dims:
            assert dims["state"] in STATES
