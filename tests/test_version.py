"""Tests for the exporter's identity: ``cadvisor_events.__version__`` and
:func:`~cadvisor_events.build_info`, the version setup.py reads, ``twistd
cadvisor-events --version`` as a user runs it, and the LICENSE setup.py names."""

import io
import os
import platform
import re
import subprocess
import sys

import twisted
from twisted.trial import unittest

from cadvisor_events import BuildInfo, __version__, build_info
from cadvisor_events.tap import Options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv, cwd: str) -> subprocess.CompletedProcess:
    """``argv`` with this checkout first on PYTHONPATH (its plugin and package), in ``cwd``."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def twistd() -> list:
    """The twistd console script of this interpreter's environment (as users run it), or,
    when there is none, the same entry point run by this interpreter."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class BuildInfoTests(unittest.TestCase):
    def test_this_process(self):
        self.assertEqual(build_info(), BuildInfo(__version__, platform.python_version(), twisted.__version__))
        self.assertRegex(__version__, r"^\d+\.\d+\.\d+")

    def test_labels_in_field_order(self):
        self.assertEqual(BuildInfo("1.2.3", "3.11.7", "26.10.0").labels(),
                         (("version", "1.2.3"), ("python_version", "3.11.7"), ("twisted_version", "26.10.0")))

    def test_describe(self):
        self.assertEqual(BuildInfo("1.2.3", "3.11.7", "26.10.0").describe(),
                         "cadvisor-events 1.2.3 (Twisted 26.10.0, Python 3.11.7)")


class VersionOptionTests(unittest.TestCase):
    def test_prints_the_exporters_version_and_exits_0(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as raised:
            Options().parseOptions(["--version"])
        self.assertEqual(raised.exception.code, 0)
        self.assertEqual(out.getvalue(), build_info().describe() + "\n")

    def test_listed_in_help(self):
        self.assertIn("--version", str(Options()))

    def test_twistd_plugin_version(self):
        """The real twistd: ``--version`` after the plugin name is ours (before it, twistd's)."""
        result = run(twistd() + ["cadvisor-events", "--version"], cwd=self.mktemp_dir())
        self.assertEqual((result.returncode, result.stdout), (0, build_info().describe() + "\n"), result.stderr)
        self.assertIn(f"cadvisor-events {__version__} (Twisted {twisted.__version__}, Python ", result.stdout)

    def mktemp_dir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path


class PackagingTests(unittest.TestCase):
    def test_setup_reads_the_version_from_the_package(self):
        setup_py = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
        self.assertNotRegex(setup_py, r"version\s*=\s*['\"]")  # no second copy of the version
        result = run([sys.executable, "setup.py", "--version"], cwd=REPO)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip().splitlines()[-1], __version__)

    def test_license_is_the_apache_license_setup_names(self):
        setup_py = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
        self.assertIn('license="Apache-2.0"', setup_py)
        self.assertRegex(setup_py, r"license_files=\[\"LICENSE\"\]")
        text = open(os.path.join(REPO, "LICENSE"), encoding="utf-8").read()
        self.assertEqual(re.split(r"\s+", text.strip())[:5], ["Apache", "License", "Version", "2.0,", "January"])
        self.assertIn("END OF TERMS AND CONDITIONS", text)
        self.assertIn("http://www.apache.org/licenses/LICENSE-2.0", text)
