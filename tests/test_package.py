"""The zip the Plugin Manager installs (``make package``): validated by qgis-manage as plugins.qgis.org would,
at most 20 MB, complete at run time (the shipped model with its OpenVINO form), without development files."""

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

import plugin_files
from conftest import ROOT

QGIS_MANAGE = ROOT / ".venv/bin/qgis-manage"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return plugin_files.make_zip(tmp_path_factory.mktemp("dist"))


def test_the_zip_passes_the_plugin_repository_checks(package):
    assert package.name == f"df4lcz.{plugin_files.version()}.zip"
    checked = subprocess.run([QGIS_MANAGE, "validate", "--zip", package, "--repo", "--max-size-mb", "20", "--json"],
                             capture_output=True, text=True, timeout=300)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["success"] and report["errors"] == [], checked.stdout
    # QGIS 4 (Qt 6) is not tested yet, so qgisMaximumVersion stays at its 3.99 default: the one warning allowed.
    assert [w.split(":")[0] for w in report["warnings"]] == ["ARTIFACT_QGIS4"], report["warnings"]
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
