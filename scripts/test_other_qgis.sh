#!/usr/bin/env bash
# make test-qgis-3.40 (SUITE trixie) and make test-qgis-3.44 (SUITE sid): the plugin on Debian's QGIS of SUITE,
# in a Debian root (scripts/qgis_root.sh), as a user gets it: the plugin zip unzipped into a fresh profile, the
# installer run from it (light, then full), then the integration tests through qgis_process in that profile and
# the Dask command line. The demo map must equal the map this host's QGIS makes in the same run.
#
#   scripts/test_other_qgis.sh SUITE
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --inside ]; then  # in the root: ZIP REFERENCE_DIR
    zip=$2 reference=$3
    home=$(mktemp -d /tmp/df4lcz-home.XXXXXX)
    plugins=$home/.local/share/QGIS/QGIS3/profiles/default/python/plugins
    mkdir -p "$plugins"
    unzip -q "$zip" -d "$plugins"
    echo "$(HOME=$home qgis_process.bin --version 2>/dev/null | grep -m1 QGIS), $(python3 -V)," \
         "numpy $(python3 -c 'import numpy; print(numpy.__version__)')," \
         "GDAL $(python3 -c 'from osgeo import gdal; print(gdal.__version__)')"
    for variant in light full; do
        start=$SECONDS
        (cd "$plugins/df4lcz" && HOME=$home python3 -m df4lcz_plugin.dependencies install --variant $variant)
        echo "TIME pip $variant $((SECONDS - start)) s"
    done
    deps=$(cd "$plugins/df4lcz" && python3 -c 'import df4lcz_plugin.dependencies as d; print(d.deps_folder(".").resolve())')
    start=$SECONDS
    # The tests' own imports (torch, dask) come from what the installer put in the profile.
    HOME=$home DF4LCZ_QGIS_HOME=$home DF4LCZ_REFERENCE_MAP=$reference QGIS_PROFILE_DIR=$home/.local/share/QGIS/QGIS3/profiles/default \
        PYTHONPATH=$deps QT_QPA_PLATFORM=offscreen OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONDONTWRITEBYTECODE=1 \
        python3 -m pytest -q -p no:cacheprovider ${DF4LCZ_TESTS:-tests/test_other_qgis.py tests/test_qgis_process.py \
        tests/test_training_qgis.py tests/test_clouds.py tests/test_vhr_qgis.py tests/test_dask_cli.py} || status=$?
    echo "TIME tests $((SECONDS - start)) s"
    exit "${status:-0}"
fi

SUITE=${1:?usage: $0 SUITE}
out=$PWD/dist/qgis-$SUITE
rm -rf "$out"
mkdir -p "$out"
.venv/bin/python scripts/plugin_files.py zip "$out" >/dev/null
zip=$(ls "$out"/df4lcz.*.zip)
start=$SECONDS
# The reference: this host's QGIS maps the demo extent; the map is kept for the root's run.
DF4LCZ_MAP_KEEP=$out/reference QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_other_qgis.py
echo "TIME reference map $((SECONDS - start)) s"
scripts/qgis_root.sh "$SUITE" >/dev/null  # built (or reused) before the run, so that its time shows apart
scripts/qgis_root.sh "$SUITE" run bash scripts/test_other_qgis.sh --inside "$zip" "$out/reference"
