"""The engine's types: the pinned mypy (requirements/py3XX/dev.txt) over df4lcz_plugin with setup.cfg's settings
(every function annotated, untyped bodies checked too). The plugin's own dependencies (torch, openvino, dask…) are
read from its .deps folder, as the tests import them."""

import os
import subprocess
import sys

import pytest

from df4lcz_plugin.runtime import dependencies

from conftest import REAL_PROFILE, ROOT


@pytest.mark.timeout(600)
def test_engine_type_checks():
    deps = dependencies.deps_folder(REAL_PROFILE / "python/plugins/df4lcz")
    assert deps.is_dir(), f"run 'make setup' first: {deps} is missing"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(deps)
    # mypy's cache in the working tree (git-ignored): a cold run (a fresh checkout, as in CI) reads torch's types
    # and takes about 35 s of CPU and 1 GB of memory; a run after it, about 3 s.
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "setup.cfg"),
                           "--cache-dir", str(ROOT / ".mypy_cache")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout + proc.stderr
