"""The documentation site (docs/, mkdocs.yml): its reference pages are what ``scripts/docs_reference.py`` writes
from the algorithms now (a dialog and its page never drift apart), and it builds strictly (a broken link or anchor,
or a page left out of the navigation, fails)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

REFERENCE = ROOT / "docs" / "reference"


@pytest.mark.timeout(300)
def test_the_reference_pages_are_what_the_algorithms_say(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}  # the system Python's own
    done = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts/docs_reference.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    written = {path.name: path.read_text(encoding="utf-8") for path in tmp_path.glob("*.md")}
    committed = {path.name: path.read_text(encoding="utf-8") for path in REFERENCE.glob("*.md")}
    assert sorted(committed) == sorted(written), "algorithms added or removed: run 'make docs' and commit the pages"
    drifted = sorted(name for name in written if written[name] != committed[name])
    assert drifted == [], f"out of date with their algorithms: {drifted}; run 'make docs' and commit the pages"


@pytest.mark.timeout(120)
def test_the_site_builds_strictly_with_a_page_per_algorithm(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(site)], capture_output=True, text=True,
                          timeout=110, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    assert {path.stem for path in REFERENCE.glob("*.md")} == {path.stem for path in (site / "reference").glob("*.html")}
    assert (site / "start-here.html").is_file() and (site / "lcz_map.png").is_file()
