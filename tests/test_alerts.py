"""Alerting rules and the Prometheus config, checked and unit-tested with promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    assert path, "promtool is not installed (scripts/test installs Debian's prometheus package)"
    return path


def run(promtool, *args, cwd):
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_rules_and_config_are_valid(promtool, repo_root):
    run(promtool, "check", "rules", "grafana/prometheus/alerts.yml", cwd=repo_root)
    # The compose config, with its rule file beside it.
    out = run(promtool, "check", "config", "grafana/prometheus/prometheus.yml", cwd=repo_root)
    assert "1 rule files found" in out


def test_rule_unit_tests_pass(promtool, repo_root):
    run(promtool, "test", "rules", "grafana/prometheus/tests/alerts.test.yml", cwd=repo_root)


def test_every_rule_has_a_firing_and_a_quiet_case(repo_root):
    rules = yaml.safe_load((repo_root / "grafana" / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((repo_root / "grafana" / "prometheus" / "tests" / "alerts.test.yml").read_text())
    fires, quiet = set(), set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert names - fires == set(), "rules with no test that fires them"
    assert names - quiet == set(), "rules with no test where they stay quiet"
    assert (fires | quiet) <= names


def test_every_alert_has_a_runbook_section(repo_root):
    rules = yaml.safe_load((repo_root / "grafana" / "prometheus" / "alerts.yml").read_text())
    operations = (repo_root / "docs" / "operations.md").read_text()
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in operations, rule["alert"]


def test_a_broken_rule_fails_its_unit_test(promtool, repo_root, tmp_path):
    """The unit tests can fail: with a threshold moved, the firing case breaks."""
    rules = (repo_root / "grafana" / "prometheus" / "alerts.yml").read_text()
    assert ") > 0.05" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(") > 0.05", ") > 0.5"))
    (tmp_path / "tests").mkdir()
    cases = yaml.safe_load((repo_root / "grafana" / "prometheus" / "tests" / "alerts.test.yml").read_text())
    cases["tests"] = [c for c in cases["tests"]
                      if c["alert_rule_test"][0]["alertname"] == "UploadFailureRateHigh"]
    (tmp_path / "tests" / "alerts.test.yml").write_text(yaml.safe_dump(cases))
    result = subprocess.run([promtool, "test", "rules", "tests/alerts.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "upload failures at 10 % fire" in result.stdout + result.stderr
