# DF4LCZ for QGIS. `make demo` and `make test` each run the whole setup first (scripts/setup.sh).
PY := .venv/bin/python
VERSION := $(shell sed -n 's/^version=//p' metadata.txt)

.PHONY: setup install demo test bench package clean

setup:
	bash scripts/setup.sh

install: setup

demo: setup
	QT_QPA_PLATFORM=offscreen $(PY) scripts/demo.py

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests

bench: setup
	$(PY) bench/bench_sentinel2.py
	$(PY) bench/bench_sam.py

package: setup
	$(PY) scripts/plugin_files.py zip dist/df4lcz-$(VERSION).zip

clean:
	rm -rf dist demo_output .pytest_cache
