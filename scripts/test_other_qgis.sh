#!/usr/bin/env bash
# make test-qgis-3.40 (SUITE trixie) and make test-qgis-3.44 (SUITE sid): the plugin on Debian's QGIS of SUITE,
# in a Debian root (scripts/qgis_root.sh), as a user gets it: the plugin zip unzipped into a fresh profile, the
# installer run from it (light, then full), then the integration tests through qgis_process in that profile and
# the Dask command line. The demo map must equal the map this host's QGIS makes in the same run.
#
#   scripts/test_other_qgis.sh SUITE
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests run in the root (DF4LCZ_TESTS overrides): one or two per job, so that CI's 90 minutes hold
# the 3.22 suite and this; the whole files take about 30 minutes more here.
INTEGRATION="tests/test_other_qgis.py tests/test_qgis_process.py::test_stack_then_classify
  tests/test_qgis_process.py::test_model3_runs_headless tests/test_qgis_process.py::test_provider_loads_without_torch
  tests/test_training_qgis.py::test_train_then_classify_then_assess tests/test_clouds.py::test_composite_of_two_dates
  tests/test_clouds.py::test_stack_carries_the_cloud_mask_band tests/test_vhr_qgis.py::test_objects_and_graph_file_headless
  tests/test_vhr_qgis.py::test_objects_without_graph_file tests/test_dask_cli.py::test_cluster_and_in_process_equal_qgis_process
  tests/test_dask_cli.py::test_failing_tile_is_reported_by_its_extent
  tests/test_sentinel2_fetch.py::test_the_fetched_stack_is_sentinel2stack_of_the_same_files
  tests/test_sentinel2_fetch.py::test_two_dates_make_the_median_composite"
# The loopback servers of the STAC tests and pytest-timeout, pinned as in requirements/dev.in, in a folder of their
# own: the tests' tools, not the plugin's.
TEST_TOOLS="rustac==0.9.18 rangehttpserver==1.4.0 pytest-timeout==2.4.0"

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
        (cd "$plugins/df4lcz" && HOME=$home python3 -m df4lcz_plugin.runtime.dependencies install --variant $variant)
        echo "TIME pip $variant $((SECONDS - start)) s"
    done
    deps=$(cd "$plugins/df4lcz" && python3 -c 'import df4lcz_plugin.runtime.dependencies as d; print(d.deps_folder(".").resolve())')
    tools=$(mktemp -d /tmp/df4lcz-tools.XXXXXX)
    python3 -m pip install -q --disable-pip-version-check --only-binary :all: --no-deps --target "$tools" $TEST_TOOLS
    start=$SECONDS
    # The tests' own imports (torch, dask) come from what the installer put in the profile.
    HOME=$home DF4LCZ_QGIS_HOME=$home DF4LCZ_REFERENCE_MAP=$reference QGIS_PROFILE_DIR=$home/.local/share/QGIS/QGIS3/profiles/default \
        PYTHONPATH=$deps:$tools PATH=$tools/bin:$PATH QT_QPA_PLATFORM=offscreen OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONDONTWRITEBYTECODE=1 \
        python3 -m pytest -q -p no:cacheprovider ${DF4LCZ_TESTS:-$INTEGRATION} || status=$?
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
