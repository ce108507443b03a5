"""The shipped Prometheus rules (deploy/prometheus/rules.yml) pass Prometheus' own checks.

``promtool check rules`` parses every expression and template; ``promtool
test rules`` runs deploy/prometheus/rules.test.yml, the unit tests of the
alerts (first kill, second kill, exporter restarts that re-seed counters,
target down, node OOM, gaps, targets file). promtool is Debian's
``prometheus`` package (CI installs it); without it these tests are skipped
with a reason saying so. The alerts against a real Prometheus server scraping
the real exporter are in tests/test_prometheus.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import List

import yaml
from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(REPO, "deploy", "prometheus", "rules.yml")
RULE_TESTS = os.path.join(REPO, "deploy", "prometheus", "rules.test.yml")

#: Annotations every alert carries, so a page says what broke and what to do.
ANNOTATIONS = {"summary", "description", "runbook"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool; skip the calling test, loudly, when it is not installed."""
    tool = shutil.which("promtool")
    if tool is None:
        raise unittest.SkipTest(
            "promtool NOT INSTALLED: the Prometheus rules are untested here "
            "(apt-get install prometheus; .ci/run installs it)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def load(path: str):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def alerts() -> List[dict]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


class PromtoolTests(unittest.TestCase):
    def test_rules_pass_promtool_check(self):
        result = promtool("check", "rules", RULES)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout)

    def test_rule_unit_tests_pass(self):
        result = promtool("test", "rules", RULE_TESTS)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout)
        self.assertNotIn("FAILED", result.stdout + result.stderr)

    def test_promtool_fails_a_wrong_expectation(self):
        """The unit tests can fail: the same tests expecting no alert where one fires fail."""
        tests = load(RULE_TESTS)
        for case in tests["tests"]:
            for check in case.get("alert_rule_test", []):
                check["exp_alerts"] = []
        tests["rule_files"] = [RULES]
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(tests, f)
        result = promtool("test", "rules", path)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("ContainerOOMKilled", result.stdout + result.stderr)


class RulesFileTests(unittest.TestCase):
    """What the rules must say, checked without promtool."""

    def test_every_alert_has_severity_and_runbook_annotations(self):
        names = [rule["alert"] for rule in alerts()]
        self.assertIn("ContainerOOMKilled", names)
        self.assertIn("NodeOOMKill", names)
        self.assertIn("CadvisorEventsTargetDown", names)
        self.assertIn("CadvisorEventsHistoryGap", names)
        self.assertIn("CadvisorEventsTargetsFileInvalid", names)
        for rule in alerts():
            self.assertIn(rule["labels"].get("severity"), ("critical", "warning"), rule["alert"])
            self.assertEqual(ANNOTATIONS - set(rule["annotations"]), set(), rule["alert"])

    def test_container_alert_names_namespace_pod_container_and_process(self):
        (rule,) = [rule for rule in alerts() if rule["alert"] == "ContainerOOMKilled"]
        text = rule["annotations"]["summary"]
        for label in ("namespace", "pod", "container", "host"):
            self.assertIn("$labels." + label, text)
        self.assertIn("oom_process", text)

    def test_target_down_waits_five_minutes(self):
        (rule,) = [rule for rule in alerts() if rule["alert"] == "CadvisorEventsTargetDown"]
        self.assertEqual(rule["for"], "5m")
        self.assertEqual(rule["expr"].strip(), "cadvisor_events_target_up == 0")

    def test_every_alert_is_unit_tested_firing_and_not_firing(self):
        firing, quiet = set(), set()
        for case in load(RULE_TESTS)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
        names = {rule["alert"] for rule in alerts()}
        self.assertEqual(names - firing, set(), "alerts never seen firing in rules.test.yml")
        self.assertEqual(names - quiet, set(), "alerts never seen quiet in rules.test.yml")
