# The two README commands: `make run` and `make test`. Both create .venv if missing
# and install the project (editable, for development: configs/ also ships inside the
# package, so a plain `pip install .` works anywhere) with the tested pins.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dgm-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
ARGS ?=
# pytest-xdist workers of `make test` (0: one process). Each worker runs torch with one
# thread (tests/conftest.py), so 2 workers fill 2 cores; the tests marked `serial` (process
# deaths, wall-clock seconds, machine load) run alone afterwards. `make test ARGS=...` runs
# one pytest process with those arguments instead.
PYTEST_WORKERS ?= 2

# Offline copy of MNIST beside the checkout (CI, course machines); users who are
# online need nothing: torchvision downloads into ~/.cache/dgm_runner.
ifeq ($(origin DGM_DATA_DIR), undefined)
ifneq ($(wildcard ../shared/data/MNIST),)
export DGM_DATA_DIR := $(abspath ../shared/data)
endif
endif

.PHONY: run test lint docs setup fashion-mnist clean bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,docs]'
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST offline: Debian's dataset-fashion-mnist (only attempted as root with apt).
fashion-mnist:
	@if [ ! -d $(FASHION_DIR) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; \
	fi

run: $(STAMP)
	$(VENV)/bin/dgm-train $(ARGS)

test: $(STAMP) fashion-mnist lint
	@echo "mkdocs build --strict (docs/ -> site/)"
	@out=$$(NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict 2>&1) || { echo "$$out"; exit 1; }
ifeq ($(strip $(ARGS)),)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow and not serial" --durations=10
	$(PY) -m pytest -m "serial and not slow" --durations=5
else
	$(PY) -m pytest $(ARGS)
endif

# ruff (configured in pyproject.toml): lint and formatting, checked before the tests.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The docs site (mkdocs.yml, docs/) -> site/; --strict: a broken link or anchor, a missing page
# or a page left out of the nav is an error. `make test` runs the same build, printing its
# output only when it fails (not --quiet: mkdocs 1.6 then drops the warnings --strict counts,
# mkdocs/mkdocs#4126).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Our training epochs against DataLoader / scikit-learn / learnergy baselines,
# the matmul bound, compile, scaling, peak RSS and sampling -> bench.json (< 10 min on
# 2 CPU cores; ARGS=--quick for a few minutes). learnergy is optional and installed
# without its dependencies: its metadata pins packages the bench does not need.
bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(PY) -m pip install --quiet --no-deps learnergy \
	  || echo "warning: learnergy not installable; its rows will be skipped"
	$(PY) scripts/bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache site
