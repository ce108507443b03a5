"""The scripts in benchmarks/ import only what README's install command for them provides.

README.rst runs them after ``pip install -e '.[bench]'`` from a checkout: the
standard library, this package with its dependencies and the ``bench`` extra,
the benchmarks' own modules, and ``tests/chaos.py`` (the soak's chaos engine,
found through ``PYTHONPATH=.``). A benchmark that imports anything else (a
test-only package such as hypothesis) would fail for whoever follows README.
"""

from __future__ import annotations

import ast
import glob
import importlib.metadata
import os
import re
import sys

from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
#: What a benchmark may import besides the standard library and installed requirements.
LOCAL = {"cadvisor_events", "tests", "_common"} | {
    os.path.splitext(os.path.basename(path))[0] for path in glob.glob(os.path.join(BENCHMARKS, "*.py"))
}


def imported(path: str) -> set:
    """The top-level modules ``path`` imports (anywhere in it, functions included)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def bench_requirements() -> set:
    """Import names of the distributions ``pip install '.[bench]'`` installs directly."""
    distributions = set()
    for requirement in importlib.metadata.requires("cadvisor-events") or []:
        name, _, marker = requirement.partition(";")
        if marker and not re.search(r"""extra\s*==\s*["']bench["']""", marker):
            continue
        distributions.add(re.split(r"[\s\[<>=!~]", name.strip(), maxsplit=1)[0].lower().replace("_", "-"))
    # A distribution not installed here (tox installs the test extra, not bench) is
    # imported under its own name (psutil); installed ones say what they provide.
    modules = {name.replace("-", "_") for name in distributions}
    for module, owners in importlib.metadata.packages_distributions().items():
        if any(owner.lower().replace("_", "-") in distributions for owner in owners):
            modules.add(module)
    return modules


class BenchmarkImportsTests(unittest.TestCase):
    def test_every_import_is_installed_by_the_bench_extra(self):
        allowed = set(sys.stdlib_module_names) | LOCAL | bench_requirements()
        self.assertIn("psutil", allowed)  # the bench extra itself was read
        scripts = sorted(glob.glob(os.path.join(BENCHMARKS, "*.py"))) + [os.path.join(REPO, "tests", "chaos.py")]
        self.assertGreaterEqual(len(scripts), 6)
        for path in scripts:
            missing = imported(path) - allowed
            self.assertEqual(missing, set(), f"{os.path.relpath(path, REPO)} imports {sorted(missing)}, which "
                                             "pip install -e '.[bench]' does not install: add it to the bench extra")

    def test_a_test_only_import_is_caught(self):
        self.assertNotIn("hypothesis", bench_requirements())
