"""deploy/prometheus: promtool check config, check rules, test rules, and that the tests bite.

CI installs promtool with Debian's `prometheus` package (scripts/bootstrap.sh).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.promql import (
    ALERTS_FILE,
    OPERATIONS_DOC,
    PROMETHEUS_DIR,
    RULE_TEST_FILES,
    alert_rules,
    all_alert_cases,
    doc_anchors,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; scripts/bootstrap.sh installs it)"
)


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def out(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def replace_expr(text: str, alert: str | None, new_expr: str) -> str:
    """The rule file with the expr of ``alert`` (None: of every rule) replaced by ``new_expr``."""
    lines = text.splitlines()
    result: list[str] = []
    current: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if m := re.match(r"\s*- alert:\s*(\S+)", line):
            current = m.group(1)
        if (m := re.match(r"(\s*)expr:", line)) and (alert is None or current == alert):
            indent = len(m.group(1))
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                i += 1
            result.append(f"{m.group(1)}expr: {new_expr}")
            continue
        result.append(line)
    return "\n".join(result) + "\n"


def mutated_copy(tmp_path: Path, alerts_text: str) -> Path:
    """deploy/prometheus copied to ``tmp_path`` with another alerts.yml; returns the copy."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    (copy / "alerts.yml").write_text(alerts_text, encoding="utf-8")
    return copy


def failing_alerts(result: subprocess.CompletedProcess[str]) -> set[str]:
    return set(re.findall(r"alertname: (\w+), time:", out(result)))


# -- the files are valid --------------------------------------------------------------------


@needs_promtool
def test_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, out(result)
    assert "SUCCESS" in out(result)


def test_scrape_jobs_and_target_files() -> None:
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8")
    assert re.findall(r"job_name:\s*(\S+)", text) == ["callpark-node", "callpark-controller", "callpark-edge", "etcd"]
    for name in ("nodes", "controllers", "edges", "etcd"):
        groups = json.loads((PROMETHEUS_DIR / "targets" / f"{name}.json").read_text(encoding="utf-8"))
        assert groups and all(g["targets"] and g["labels"]["site"] for g in groups)


@needs_promtool
def test_promtool_check_config_rejects_a_broken_target_file(tmp_path: Path) -> None:
    copy = mutated_copy(tmp_path, ALERTS_FILE.read_text(encoding="utf-8"))
    (copy / "targets" / "nodes.json").write_text('[{"targets": "park-a1:9401"}]', encoding="utf-8")
    result = promtool("check", "config", "prometheus.yml", cwd=copy)
    assert result.returncode != 0 and "nodes.json" in out(result)


@needs_promtool
def test_promtool_check_rules_and_rule_count() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, out(result)
    m = re.search(r"SUCCESS: (\d+) rules found", out(result))
    assert m, out(result)
    # the line parser of tests/deploy/promql.py sees every rule promtool sees
    assert int(m.group(1)) == len(alert_rules())


@needs_promtool
def test_promtool_test_rules() -> None:
    assert len(RULE_TEST_FILES) >= 4
    result = promtool("test", "rules", *(str(p.relative_to(PROMETHEUS_DIR)) for p in RULE_TEST_FILES))
    assert result.returncode == 0, out(result)
    assert out(result).count("SUCCESS") == len(RULE_TEST_FILES)


# -- the alerts are complete ------------------------------------------------------------------

REQUIRED_ALERTS = {
    "CallparkPoolDown",  # a pool down
    "CallparkFailover",  # a failover happened
    "CallparkParkedCallsLost",  # parked calls lost
    "CallparkOrbitsLow",  # orbits nearly exhausted in a range
    "CallparkNoControllerLeader",  # no controller leader
    "CallparkEtcdErrors",  # etcd errors
    "CallparkLeaseRenewalSlow",  # slow lease renewals
    "CallparkWorkerCrashLoop",  # workers crashing
}


def test_required_alerts_exist_and_names_are_unique() -> None:
    names = [r.name for r in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = all_alert_cases()
    names = {r.name for r in alert_rules()}
    firing = {c.alertname for c in cases if c.fires}
    quiet = {c.alertname for c in cases if not c.fires}
    assert {c.alertname for c in cases} <= names, "a rule test names an alert that does not exist"
    assert names - firing == set(), f"alerts without a firing case: {sorted(names - firing)}"
    assert names - quiet == set(), f"alerts without a not-firing case: {sorted(names - quiet)}"


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    anchors = doc_anchors(OPERATIONS_DOC.read_text(encoding="utf-8"))
    for rule in alert_rules():
        assert rule.labels.get("severity") in ("critical", "warning"), rule.name
        assert set(rule.annotations) >= {"summary", "description", "runbook_url"}, rule.name
        assert len(rule.annotations["description"]) > 40, rule.name
        url = rule.annotations["runbook_url"]
        assert url == f"docs/OPERATIONS.md#{rule.name.lower()}", (rule.name, url)
        assert rule.name.lower() in anchors, f"docs/OPERATIONS.md has no section '{rule.name}' for its runbook"


# -- the tests can fail ---------------------------------------------------------------------------


@needs_promtool
def test_rule_tests_fail_for_every_alert_that_never_fires(tmp_path: Path) -> None:
    """With every expression replaced by one that never fires, every alert's firing case fails."""
    copy = mutated_copy(tmp_path, replace_expr(ALERTS_FILE.read_text(encoding="utf-8"), None, "vector(0) > 1"))
    assert promtool("check", "rules", "alerts.yml", cwd=copy).returncode == 0
    result = promtool("test", "rules", *(f"tests/{p.name}" for p in RULE_TEST_FILES), cwd=copy)
    assert result.returncode != 0
    assert failing_alerts(result) == {r.name for r in alert_rules()}


@needs_promtool
@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        # the standby controller's stale pool_up = 0 would raise a false alarm
        ("CallparkPoolDown", "and on (instance) callpark_controller_leader == 1", ""),
        # without the new-series term, a pool's first failover goes unnoticed
        ("CallparkFailover", "unless callpark_failovers_total offset 15m", "unless callpark_failovers_total"),
        # the other order of `or`: increase() = 0 of a new series hides the first lost call
        (
            "CallparkParkedCallsLost",
            "(callpark_lost_calls_total unless callpark_lost_calls_total offset 15m)\n"
            "            or\n"
            "              increase(callpark_lost_calls_total[15m])",
            "increase(callpark_lost_calls_total[15m])\n"
            "            or\n"
            "              (callpark_lost_calls_total unless callpark_lost_calls_total offset 15m)",
        ),
        # a pool that no longer owns a range keeps exporting a stale orbit count
        ("CallparkOrbitsExhausted", "callpark_range_owner == 1 and on (instance) ", ""),
        # a single fenced scrape must not alert
        ("CallparkNodeFenced", "for: 30s", "for: 0s"),
        ("CallparkOrbitsLow", ") < 0.1", ") < 0.05"),
        ("CallparkWorkerCrashLoop", ">= 3", ">= 4"),
    ],
)
def test_rule_tests_catch_a_changed_rule(tmp_path: Path, alert: str, old: str, new: str) -> None:
    text = ALERTS_FILE.read_text(encoding="utf-8")
    start = text.index(f"- alert: {alert}\n")
    end = text.find("- alert: ", start + 1)
    end = len(text) if end < 0 else end
    block = text[start:end]
    assert old in block, f"mutation anchor not found in {alert}: {old!r}"
    copy = mutated_copy(tmp_path, text[:start] + block.replace(old, new) + text[end:])
    assert promtool("check", "rules", "alerts.yml", cwd=copy).returncode == 0
    files = sorted({f"tests/{c.file}" for c in all_alert_cases() if c.alertname == alert})
    result = promtool("test", "rules", *files, cwd=copy)
    assert result.returncode != 0, f"the rule tests did not notice the change to {alert}"
    assert alert in failing_alerts(result)
