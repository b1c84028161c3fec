"""The zip the Plugin Manager installs (``make package``): validated by qgis-manage as plugins.qgis.org would,
at most 20 MB, complete at run time (the shipped model with its OpenVINO form), without development files, and
passing the site's release checks (Bandit, detect-secrets) as the site runs them."""

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile

import pytest

import plugin_files
import release_checks
from conftest import ROOT

QGIS_MANAGE = ROOT / ".venv/bin/qgis-manage"
_MISSING_TOOLS = [name for name in ("bandit", "detect_secrets") if importlib.util.find_spec(name) is None]
needs_release_tools = pytest.mark.skipif(
    bool(_MISSING_TOOLS), reason=f"{', '.join(_MISSING_TOOLS)} not importable: install requirements/dev.txt "
                                 "('make setup') to run plugins.qgis.org's release checks")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return plugin_files.make_zip(tmp_path_factory.mktemp("dist"))


def test_the_zip_passes_the_plugin_repository_checks(package):
    assert package.name == f"df4lcz.{plugin_files.version()}.zip"
    checked = subprocess.run([QGIS_MANAGE, "validate", "--zip", package, "--repo", "--max-size-mb", "20", "--json"],
                             capture_output=True, text=True, timeout=300)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["success"] and report["errors"] == [], checked.stdout
    # qgisMaximumVersion=4.99: plugins.qgis.org offers the plugin to QGIS 4 (tests/test_qt6.py;
    # docs/development/qgis-versions.md).
    assert report["warnings"] == [], report["warnings"]
    assert package.stat().st_size <= 20e6


def test_the_zip_holds_what_runs_and_nothing_for_developers(package):
    with zipfile.ZipFile(package) as archive:
        names = archive.namelist()
        modes = {(info.external_attr >> 16) & 0o777 for info in archive.infolist()}
    assert {name.split("/")[0] for name in names} == {"df4lcz"} and modes == {0o644}
    inside = {name.split("/", 1)[1] for name in names}
    model = "resources/lcz_models/sen2lcznet_so2sat"
    assert {f"{model}.json", f"{model}.safetensors"} <= inside
    assert {n.rsplit(".", 1)[1] for n in inside if n.startswith(f"{model}.openvino-")} == {"xml", "bin"}
    sets = {f"requirements/py{python}/{variant}-{platform}.txt" for python in (311, 312, 313, 314)
            for variant in ("light", "full") for platform in ("linux", "windows", "macos")}
    assert {"metadata.txt", "__init__.py", "LICENSE", "resources/icon.png", "requirements/light.in",
            "requirements/full.in", *sets} <= inside
    # the documentation site, which each algorithm's Help opens offline: a page per algorithm and model
    assert {"docs_site/index.html", "docs_site/start-here.html",
            *(f"docs_site/reference/{page.stem}.html" for page in (ROOT / "docs/reference").glob("*.md"))} <= inside
    assert not [name for name in inside if name.endswith("dev.txt") or name.endswith("dev.in")]
    assert not {name.split("/")[0] for name in inside} & {"scripts", "tests", "bench", ".ci", "Makefile", "docs"}
    assert "requirements/dev.txt" not in inside and not any("__pycache__" in n or n.endswith(".pyc") for n in inside)


def test_a_zip_without_the_openvino_form_is_refused(tmp_path):
    """A checkout where setup has not converted the model: the zip would need PyTorch to classify."""
    models = tmp_path / "lcz_models"
    models.mkdir()
    for path in plugin_files.model_files(plugin_files.SHIPPED_MODEL):
        shutil.copy2(path, models / path.name)
    probe = ("import sys; sys.path.insert(0, 'scripts'); import plugin_files as p, pathlib; "
             f"p.SHIPPED_MODEL = pathlib.Path({str(models / plugin_files.SHIPPED_MODEL.name)!r}); "
             f"p.make_zip({str(tmp_path / 'dist')!r})")
    made = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 1 and "Traceback" not in made.stderr
    assert "is missing from" in made.stderr and "run 'make setup' first" in made.stderr
    assert not (tmp_path / "dist").exists()


@needs_release_tools
def test_the_zip_passes_the_plugin_sites_release_checks(package):
    """Bandit and detect-secrets as plugins.qgis.org runs them on an upload: no finding (the site would block the
    release) but those accepted (``# nosec``, .secrets.baseline), and each accepted rule justified in
    scripts/release_checks.ini, one line each, none stale."""
    result = release_checks.check(package)
    assert result["blocking"] == []
    justified = release_checks.accepted_rules()
    for tool in ("bandit", "detect-secrets"):
        assert set(justified[tool]) == result["accepted"][tool], tool
        assert all(len(reason.split()) >= 8 for reason in justified[tool].values()), justified[tool]
    # The subprocess calls and the asset checksums are what the site's reviewers look at first.
    assert {"B603", "B310"} <= result["accepted"]["bandit"]
    assert result["accepted"]["detect-secrets"] == {"HexHighEntropyString"}
    with zipfile.ZipFile(package) as archive:
        assert "df4lcz/.secrets.baseline" in archive.namelist() and "df4lcz/.bandit" not in archive.namelist()


def _fixture_zip(path, files):
    """FIXTURE: a tiny plugin zip (folder ``fixture/``) holding ``files`` ({name: text})."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"fixture/{name}", text)
    return path


@needs_release_tools
def test_a_finding_blocks_the_release(tmp_path):
    """FIXTURE zip with an eval and an AWS access key id (AWS's documented example, split here so that this
    file is not itself a finding): both are reported, and ``make package``'s command fails naming them."""
    zip_path = _fixture_zip(tmp_path / "fixture.zip", {
        "__init__.py": "def run(text):\n    return eval(text)\n",
        "settings.py": f"KEY_ID = \"{'AKIA' + 'IOSFODNN7EXAMPLE'}\"\n"})
    blocking = release_checks.check(zip_path)["blocking"]
    assert [f[:2] for f in blocking if f[0] == "B307"] == [("B307", "fixture/__init__.py:2")]
    assert ("AWSKeyDetector", "fixture/settings.py:1") in blocking
    made = subprocess.run([sys.executable, ROOT / "scripts/release_checks.py", zip_path], capture_output=True,
                          text=True, timeout=600)
    assert made.returncode == 1 and "Traceback" not in made.stderr, made.stderr
    assert "BLOCKING B307" in made.stdout and "would block this release" in made.stderr


@needs_release_tools
def test_a_bandit_skip_list_is_refused_not_passed(tmp_path):
    """FIXTURE zip whose .bandit skips a rule the site runs: Bandit then refuses to scan ("Non-exclusive
    include/exclude test sets"), which the site records as a tool error, not a pass; so acceptances are inline."""
    zip_path = _fixture_zip(tmp_path / "fixture.zip", {"__init__.py": "import pickle\n",
                                                      ".bandit": "[bandit]\nskips = B403\n"})
    with pytest.raises(release_checks.CheckError, match="Non-exclusive include/exclude"):
        release_checks.check(zip_path)
