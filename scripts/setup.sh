#!/usr/bin/env bash
# Everything `make demo` and `make test` need, on a fresh Debian bookworm machine; idempotent.
#  1. Debian QGIS (and the Debian Python packages the tests use) if missing
#  2. the development venv .venv (Debian Python, --system-site-packages)
#  3. the plugin's dependencies (the "full" set pinned for this Python) in <plugin>/.deps/py<XY> of the default QGIS
#     profile, without numpy, by the plugin's own installer (df4lcz_plugin.runtime.dependencies)
#  4. assets (weights, test scene, checkpoints) into the per-user cache
#  5. the shipped LCZ model, converted from the So2Sat Keras weights
#  6. the plugin copied into the default profile and enabled
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
PROFILE=${QGIS_PROFILE_DIR:-$HOME/.local/share/QGIS/QGIS3/profiles/default}
PLUGIN=$PROFILE/python/plugins/df4lcz
export QT_QPA_PLATFORM=offscreen

apt_packages="qgis python3-qgis qgis-providers python3-venv python3-pip python3-h5py xvfb python3-pyqt6"
if ! dpkg -s $apt_packages >/dev/null 2>&1; then
  echo "== installing Debian packages: $apt_packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $apt_packages >/dev/null
fi

PYVER=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info.major}{sys.version_info.minor}")')
NUMPY=$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)')
echo "numpy==$NUMPY" > .venv-constraints.txt

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
# The development tools pinned for this Python (scripts/compile_pins.py), wheels only.
DEV=requirements/py$PYVER/dev.txt
[ -f "$DEV" ] || { echo "no development pins for Python $PYVER ($DEV); see scripts/compile_pins.py"; exit 1; }
stamp=$(cat "$DEV" .venv-constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.dev-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "== installing development tools"
  .venv/bin/pip install -q --disable-pip-version-check --only-binary :all: -r "$DEV" -c .venv-constraints.txt
  echo "$stamp" > .venv/.dev-stamp
fi

DEPS=$PLUGIN/.deps/py$PYVER
echo "== plugin dependencies in $DEPS (PyTorch: a few GB, several minutes the first time)"
.venv/bin/python -m df4lcz_plugin.runtime.dependencies install --variant full --target "$DEPS"
# The venv sees the same private folder, so tests and scripts use exactly what QGIS uses.
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEPS" > "$SITE/df4lcz_deps.pth"

echo "== fetching assets"
.venv/bin/python -m df4lcz_plugin.runtime.assets
if [ ! -f resources/lcz_models/sen2lcznet_so2sat.safetensors ]; then
  echo "== converting the So2Sat Sen2LCZ-Net weights"
  .venv/bin/python -m df4lcz_plugin.models.keras_import
fi
# Its OpenVINO form, built once here, so that the plugin zip classifies on CPU without PyTorch.
.venv/bin/python -m df4lcz_plugin.models.backends resources/lcz_models/sen2lcznet_so2sat.json >/dev/null

echo "== installing the plugin into $PLUGIN"
.venv/bin/python scripts/plugin_files.py copy "$PLUGIN"
if ! out=$(/usr/bin/qgis_process.bin plugins enable df4lcz 2>&1); then
  grep -q "already enabled" <<<"$out" || { echo "$out"; exit 1; }
fi
echo "== setup done"
