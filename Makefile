# DF4LCZ for QGIS. `make demo` and `make test` each run the whole setup first (scripts/setup.sh).
PY := .venv/bin/python
VERSION := $(shell sed -n 's/^version=//p' metadata.txt)

.PHONY: setup install demo test docs test-qgis-3.40 test-qgis-3.44 faults bench package pins reproduce clean

setup:
	bash scripts/setup.sh

install: setup

demo: setup
	QT_QPA_PLATFORM=offscreen $(PY) scripts/demo.py

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests

# The plugin zip on Debian's QGIS 3.40 (trixie) / 3.44 (sid) in a cached Debian root (scripts/qgis_root.sh,
# run as root): installed as a user would, then the integration tests there (scripts/test_other_qgis.sh).
test-qgis-3.40: setup
	bash scripts/test_other_qgis.sh trixie

test-qgis-3.44: setup
	bash scripts/test_other_qgis.sh sid

# Longer kill sweeps than make test's (tests/test_faults.py): more moments per job, SIGTERM and SIGKILL.
faults: setup
	DF4LCZ_FAULTS=long QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests/test_faults.py

bench: setup
	$(PY) bench/bench_sentinel2.py
	$(PY) bench/bench_sam.py
	$(PY) bench/bench_sam_decoder.py
	QT_QPA_PLATFORM=offscreen $(PY) bench/bench_sam_product.py
	$(PY) bench/bench_dask.py
	$(PY) bench/bench_fetch.py
	$(PY) bench/bench_levers.py --json bench_levers.json

# The pinned dependency sets requirements/py3XX/*.txt, resolved by uv from requirements/*.in (never edited by hand).
pins: setup
	$(PY) scripts/compile_pins.py

# The documentation site: the reference pages written from the algorithms (PyQGIS: the system Python), then the site
# built strictly into site/ (broken links and pages left out of the navigation fail). The plugin ships a copy.
docs: setup
	QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/docs_reference.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The DF4LCZ paper's protocol on LCZC-GES2 (needs internet and, realistically, a GPU): both split protocols.
LCZC ?= data/DF4LCZ
reproduce: setup
	test -d $(LCZC)/sen2_img_patches || git clone --depth 1 https://github.com/ctrlovefly/DF4LCZ $(LCZC)
	$(PY) -m df4lcz_plugin.training.train lczc-ges2 $(LCZC) --split random --device auto | tee reproduce_random.json
	$(PY) -m df4lcz_plugin.training.train lczc-ges2 $(LCZC) --split polygons --device auto | tee reproduce_polygons.json

# The zip the Plugin Manager installs (dist/df4lcz.<version>.zip), validated as plugins.qgis.org does, at most 20 MB,
# then scanned with Bandit and detect-secrets as the site scans every upload (a finding there blocks the release).
package: setup
	$(PY) scripts/plugin_files.py zip dist
	.venv/bin/qgis-manage validate --zip dist/df4lcz.$(VERSION).zip --repo --max-size-mb 20
	$(PY) scripts/release_checks.py dist/df4lcz.$(VERSION).zip

clean:
	rm -rf dist demo_output site .pytest_cache .mypy_cache reproduce_*.json bench_levers.json
