"""The pinned dependency sets (requirements/py3XX/*.txt): each pin has a wheel for its Python and platform on the real
package index (uv, metadata only); the sets are exactly what scripts/compile_pins.py makes of the inputs; the
installer picks the set of the interpreter it runs on (real Pythons 3.10 to 3.13 of this machine's pyenv), refuses a
Python without one, and accepts a fitting version that QGIS's own Python has; OpenVINO converts and runs the shipped
model without openvino-telemetry, which no set holds, and starts no process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import compile_pins
from conftest import MODEL_CARD, REAL_PROFILE, ROOT
from df4lcz_plugin.runtime import dependencies

QGIS_PYTHON = "/usr/bin/python3"
PYENV = Path.home() / ".pyenv/versions"
SETS = sorted(ROOT.glob("requirements/py3*/*.txt"))
UV_ENV = dict(os.environ, UV_NO_CONFIG="1", MACOSX_DEPLOYMENT_TARGET=compile_pins.MACOS_TARGET)


def _pins(path):
    return dict(line.split("==") for line in dependencies._lines(path))


def test_one_set_per_python_and_platform():
    names = {path.relative_to(ROOT / "requirements").as_posix() for path in SETS}
    assert names == {f"py{python.replace('.', '')}/{name}.txt" for python in compile_pins.PYTHONS
                     for name in ["dev", *(f"{v}-{p}" for v in dependencies.VARIANTS for p in compile_pins.PLATFORMS)]}
    assert dependencies.supported_pythons() == list(compile_pins.PYTHONS)
    for path in SETS:
        pins = _pins(path)
        assert "numpy" not in pins and "openvino-telemetry" not in pins, path
        if path.name.startswith("light-"):  # light is full's subset, at full's versions
            full = _pins(path.with_name(path.name.replace("light-", "full-")))
            assert {name: full.get(name) for name in pins} == pins, path
    assert _pins(ROOT / "requirements/py311/light-linux.txt")["scipy"] == "1.13.1"  # numpy 1.24's
    assert _pins(ROOT / "requirements/py314/light-linux.txt")["scipy"] >= "1.16.1"
    for python in compile_pins.PYTHONS:
        full = _pins(ROOT / f"requirements/py{python.replace('.', '')}/full-linux.txt")
        assert (full["torch"], full["torchvision"]) == ("2.14.0", "0.29.2")


@pytest.mark.parametrize("path", SETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_pin_has_a_wheel(path, tmp_path):
    """uv's dry run of each pin alone (--no-deps), wheels only, for the set's Python and platform: it reads the
    index's metadata and downloads nothing; a pin without a fitting wheel fails it."""
    python = f"3.{path.parent.name[3:]}"
    platform = "linux" if path.name == "dev.txt" else path.stem.split("-")[1]
    run = subprocess.run([compile_pins.uv_binary(), "pip", "install", "--dry-run", "--no-deps", "--only-binary",
                          ":all:", "--python-version", python, "--python-platform",
                          compile_pins.PLATFORMS[platform], "--index-url", "https://pypi.org/simple", "--target",
                          str(tmp_path), "-r", str(path)], env=UV_ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"Would install {len(_pins(path))} packages" in run.stderr, run.stderr


def test_sets_are_what_the_generator_makes(tmp_path):
    """scripts/compile_pins.py rerun on a copy of requirements/ changes nothing: the sets are up to date with the
    inputs (regenerate them with 'make pins' after changing an input)."""
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    written = compile_pins.compile_all(tmp_path)
    assert sorted(written) == sorted(path.relative_to(ROOT) for path in SETS)
    stale = [str(path) for path in written if (tmp_path / path).read_text() != (ROOT / path).read_text()]
    assert not stale, f"out of date with the inputs (run 'make pins'): {stale}"


def _cli(python, *args, plugin=ROOT, env=None):
    """``python -m df4lcz_plugin.runtime.dependencies ARGS`` in ``plugin``, without the environment's Python settings."""
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith("PYTHON")}
    return subprocess.run([str(python), "-m", "df4lcz_plugin.runtime.dependencies", *args], cwd=plugin, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_each_python_checks_its_own_set(version, tmp_path):
    """A real interpreter of each version (pyenv's) reads its own set: against an empty folder it lacks every pin
    of py3XX/light-linux.txt (SciPy, named as the user knows it, first among them)."""
    python = QGIS_PYTHON if version == "3.11" else next(PYENV.glob(f"{version}.*/bin/python3"))
    out = _cli(python, "missing", "--variant", "light", "--target", str(tmp_path / ".deps/py"))
    pins = _pins(ROOT / f"requirements/py{version.replace('.', '')}/light-linux.txt")
    assert out.returncode == 1, out.stderr
    listed = out.stdout.splitlines()
    assert len(listed) == len(pins) and "SciPy" in listed and "scipy" not in listed, out.stdout


def test_a_python_without_a_set_is_told_which_are_supported(tmp_path):
    """Python 3.10 (pyenv's, real) has no set: install and missing refuse, naming the supported versions; the
    algorithms and the dialog show the same text (dependencies.pin_file's InstallError)."""
    python = next(PYENV.glob("3.10.*/bin/python3"))
    for command in (["missing", "--variant", "light"], ["install", "--variant", "full"]):
        out = _cli(python, *command, "--target", str(tmp_path / ".deps/py310"))
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "pinned (wheels only) for Python 3.11, 3.12, 3.13, 3.14" in out.stderr
        assert "this QGIS runs Python 3.10 on linux x86_64" in out.stderr, out.stderr
    assert not (tmp_path / ".deps/py310").exists()
    with pytest.raises(dependencies.InstallError, match="for Python 3.11, 3.12, 3.13, 3.14 on Linux x86_64"):
        dependencies.pin_file("light", python="3.15")


def test_qgis_own_fitting_version_counts(tmp_path):
    """QGIS's own Python (here /usr/bin/python3 with an extra site folder standing for a distribution's packages)
    provides what fits light.in's range: Debian bookworm's python3-scipy 1.10.1 (below scipy>=1.13.1) does not
    count; a real scipy 1.15.3 wheel (trixie's version) does, though the pin is 1.13.1; a closure package counts
    only at its pinned version. What the dependency folder holds in another version is still lacking (it would
    come first on sys.path)."""
    site, target = tmp_path / "site", tmp_path / ".deps/py311"
    for pin in ("scipy==1.15.3", "zipp==4.1.0", "locket==1.0.0"):
        subprocess.run([QGIS_PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--only-binary", ":all:",
                        "--target", str(site), pin], check=True)
    bare = _cli(QGIS_PYTHON, "missing", "--variant", "light", "--target", str(target)).stdout.splitlines()
    assert "SciPy" in bare and "zipp" in bare and "locket" in bare  # Debian's scipy 1.10.1 is too old
    out = _missing_with(site, target)
    assert "SciPy" not in out and "locket" not in out and "zipp" in out  # zipp: 4.1.0 is not the pin 4.1.2
    assert len(out) == len(bare) - 2
    dependencies.install_package(dependencies.Pin("locket", "0.2.1", None), target)  # another version in the folder
    again = _missing_with(site, target)
    assert "locket" in again and "SciPy" not in again


def _missing_with(site, target):
    """``missing('light', target)`` in QGIS's Python with ``site`` on its sys.path (after the working tree)."""
    code = ("import sys; sys.path.insert(1, sys.argv[1]); from df4lcz_plugin.runtime import dependencies as d; "
            "print('\\n'.join(d.missing('light', sys.argv[2])))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([QGIS_PYTHON, "-c", code, str(site), str(target)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout.splitlines()


_CONVERT = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, psutil
from df4lcz_plugin.models import backends
from df4lcz_plugin.models.registry import load_model
model = load_model(sys.argv[2], "cpu")
xml = backends.convert(model.sentinel2, sys.argv[3])
batch = np.random.default_rng(0).random((4, 10, 32, 32), dtype=np.float32)
openvino = backends.OpenVINORunner(xml)(batch)
torch = backends.TorchRunner(model.sentinel2, "cpu")(batch)
print(float(np.abs(openvino - torch).max()), "openvino_telemetry" in sys.modules, len(psutil.Process().children()))
"""


def test_openvino_works_without_telemetry(tmp_path):
    """The real dependency folder without openvino-telemetry (every other entry linked): OpenVINO converts the
    shipped model (df4lcz_plugin.models.backends) and runs it like PyTorch, never imports openvino_telemetry and
    starts no process (the telemetry's sender would be one)."""
    real = dependencies.deps_folder(REAL_PROFILE / "python/plugins/df4lcz")
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in real.iterdir():
        if not entry.name.startswith("openvino_telemetry"):
            (deps / entry.name).symlink_to(entry)
    out = subprocess.run([QGIS_PYTHON, "-c", _CONVERT, str(deps), str(MODEL_CARD), str(tmp_path / "model.xml")],
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    difference, imported, children = out.stdout.split()
    assert float(difference) < 1e-4 and imported == "False" and children == "0", out.stdout
    assert (tmp_path / "model.bin").stat().st_size > 0
    assert sys.modules.get("openvino_telemetry") is None
