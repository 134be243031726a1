"""The alert rules an operator loads into Prometheus (appliance/prometheus-alerts.yml), checked
by Prometheus's own promtool: they parse, their unit tests (tests/data/alerts-test.yml) pass, and
those unit tests would notice an alert that never fires or always does. The docs show the same
text, and the Prometheus configuration the docs give loads them. That every metric and label value
they select is one a running tempalias exposes is tests/test_metrics.py's, which has the service.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "appliance" / "prometheus-alerts.yml"
UNIT_TESTS = REPO / "tests" / "data" / "alerts-test.yml"
MONITORING = REPO / "docs/monitoring.md"
# issue 16: smarthost failing, Redis unreachable, RBL timeouts, refusals spiking
ALERTS = ("TempaliasSmarthostFailing", "TempaliasRedisUnreachable", "TempaliasRblTimeouts",
          "TempaliasRefusalsSpiking")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=300)


def rules() -> dict:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def test_promtool_accepts_the_four_alerts():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    named = [rule["alert"] for group in rules()["groups"] for rule in group["rules"]]
    assert named == list(ALERTS)


def test_each_alert_fires_when_it_should_and_stays_silent_otherwise():
    tested = promtool("test", "rules", str(UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def failures_with(tmp_path: Path, alert: str, expr: str) -> str:
    """promtool's report of the unit tests of ``alert`` run on the rules with its expression
    replaced by ``expr`` ('' when they pass)."""
    changed = rules()
    for group in changed["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = expr
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(changed, sort_keys=False))
    unit_tests = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    unit_tests["rule_files"] = ["rules.yml"]
    unit_tests["tests"] = [test for test in unit_tests["tests"]
                           if any(check["alertname"] == alert for check in test["alert_rule_test"])]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(unit_tests, sort_keys=False))
    tested = promtool("test", "rules", str(tmp_path / "tests.yml"))
    return tested.stdout + tested.stderr if tested.returncode != 0 else ""


def unmet(report: str, alert: str, expected: str) -> bool:
    """Whether promtool's ``report`` has ``alert`` unmet at some moment where it was expected to
    fire (``expected="firing"``; nothing came) or to stay silent (``"silence"``; it fired)."""
    exp, got = (r"\[\n(?:.*\n)*?\s+\]", r"\[\]") if expected == "firing" else (r"\[\]", r"\[\n")
    return re.search(rf"alertname: {alert}, time: \S+, \n\s+exp:{exp}, \n\s+got:{got}",
                     report) is not None


@pytest.mark.parametrize("alert", ALERTS)
def test_the_unit_tests_tell_a_silent_alert_and_a_noisy_one_from_the_real_one(alert, tmp_path):
    """A rule that never fires fails some expectation of a firing alert; one that always fires
    fails some expectation of silence. So each alert is tested both ways, not only parsed."""
    never = failures_with(tmp_path, alert, "vector(1) < 0")
    assert unmet(never, alert, "firing"), never
    always = failures_with(tmp_path, alert, "vector(1)")
    assert unmet(always, alert, "silence"), always


YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def test_the_docs_show_the_rules_as_they_are():
    text = MONITORING.read_text(encoding="utf-8")
    section = text.split("\n## Alert rules\n", 1)[1].split("\n## ", 1)[0]
    shown = [block for block in YAML_BLOCK.findall(section) if block.lstrip().startswith("# ")
             or "groups:" in block]
    assert shown == [RULES.read_text(encoding="utf-8")]


def test_the_docs_prometheus_configurations_load(tmp_path):
    """Every Prometheus configuration the docs give (the scrape jobs, the appliance's two) is one
    Prometheus accepts, and the one that loads the rules loads this file."""
    configs = [textwrap.dedent(block) for block in YAML_BLOCK.findall(
        MONITORING.read_text(encoding="utf-8")) if "scrape_configs:" in block]
    assert len(configs) >= 2
    loading = 0
    for number, config in enumerate(configs):
        directory = tmp_path / str(number)
        directory.mkdir()
        for name in yaml.safe_load(config).get("rule_files") or ():
            shutil.copy(RULES, directory / name)
            loading += 1
        (directory / "prometheus.yml").write_text(config)
        checked = promtool("check", "config", str(directory / "prometheus.yml"))
        assert checked.returncode == 0, config + checked.stdout + checked.stderr
    assert loading >= 1
