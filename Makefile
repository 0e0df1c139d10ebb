# Quickstart targets. Each one sets up its own virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo_bce_yeast

.PHONY: demo test test-slow setup clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ltjax needs Python >= 3.11; run make with PYTHON=/path/to/python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Train BCE on the real yeast data (fetched offline-capable through the asset cache) and print the
# head/medium/tail mAP table.  Starts from scratch every time.
demo: $(VENV)/.installed
	rm -rf $(DEMO_DIR)
	$(PY) -m ltjax.train --config configs/bce_yeast.py --workdir $(DEMO_DIR)

# The test suite (slow tests excluded; `make test-slow` runs them), in TEST_WORKERS pytest-xdist processes
# (each with its own 8 fake CPU devices; 2 suits a 2-core machine, more need ~2 GiB of memory each).
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" --durations=20

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs *.egg-info
