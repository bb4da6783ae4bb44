# pytest-multiconn developer entry points.
# Needs only `python3` and `make`; everything else is installed into $(VENV).

PYTHON   ?= python3
VENV      = .venv
BIN       = $(VENV)/bin
PIP       = $(BIN)/python -m pip
PIP_FLAGS ?= --disable-pip-version-check --no-input --progress-bar off
# Worker count for pytest-xdist (this machine has 2 cores).
XDIST    ?= 2
# Coverage floors (branch coverage, as `coverage report` counts it): the whole package, and
# the selector loop, connection and server modules on their own.
COV_FLOOR ?= 85
COV_CORE_FLOOR ?= 95
COV_CORE = core/loop core/connection core/server
comma := ,
space := $(subst ,, )

# Only lint directories that exist (ruff errors on missing paths).
LINT_PATHS = $(wildcard src tests examples benchmarks tools noxfile.py)

.PHONY: all install install-test install-bench install-docs install-dev demo lint typecheck test coverage bench bench-quick soak docs matrix matrix-smoke dist clean distclean

all: test

# --- installation (stamp files; re-run when pyproject.toml changes) ---------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) -e '.[test,panel]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) -e '.[test,bench]'
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) -e '.[test,docs]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) -e '.[test,dev]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench
install-docs: $(VENV)/.installed-docs
install-dev: $(VENV)/.installed-dev

# --- everyday targets --------------------------------------------------------

demo: $(VENV)/.installed
	$(BIN)/multiconn demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check $(LINT_PATHS)

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# Parallel with pytest-xdist: `-n 2` is the faster on the 2-core dev box (median 59 s
# against 122 s serial, ratio 0.48; `python benchmarks/xdist_wall_time.py` measures it).
test: $(VENV)/.installed-test lint typecheck
	$(BIN)/python -m pytest -n $(XDIST)

# xdist workers are subprocesses; [tool.coverage.run] has parallel = true and
# patch = ["subprocess"] so each worker writes its own data file, which
# `coverage combine` merges.
# The loop threads are measured through `concurrency = ["thread"]`, the CLI and
# multiconn_server_process children through the same subprocess patch.  The HTML report is
# written before the floors are checked, so a failing floor still leaves it to look at.
coverage: $(VENV)/.installed-test
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -n $(XDIST)
	$(BIN)/coverage combine -q
	$(BIN)/coverage html -q
	$(BIN)/coverage report --fail-under=$(COV_FLOOR)
	@echo "--- core modules: selector loop, connection, server (floor $(COV_CORE_FLOOR)% each) ---"
	@$(BIN)/coverage report --include='$(subst $(space),$(comma),$(foreach m,$(COV_CORE),*/pytest_multiconn/$(m).py))'
	@for m in $(COV_CORE); do \
	  $(BIN)/coverage report --include="*/pytest_multiconn/$$m.py" \
	    --fail-under=$(COV_CORE_FLOOR) > /dev/null \
	  || { echo "coverage: $$m.py is below the $(COV_CORE_FLOOR)% floor"; exit 1; }; \
	done

# The documentation site (MkDocs Material + mkdocstrings), built strictly: a broken link, a
# missing page or an API object that does not import fails the build.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The version matrix (noxfile.py): Python 3.11/3.12/3.13 x pytest 7.4/8.x/9.x, the whole
# suite in each cell.  matrix-smoke runs a few version-sensitive files per cell (.ci/run).
matrix: $(VENV)/.installed-dev
	$(BIN)/nox -s tests $(NOX_ARGS)

matrix-smoke: $(VENV)/.installed-dev
	$(BIN)/nox -s smoke $(NOX_ARGS)

# A wheel and an sdist in dist/, checked the way PyPI would check them.
dist: $(VENV)/.installed-dev
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The full benchmark run (about 12 minutes; needs cc, and redis-server, redis-tools and socat
# for the proxy table): prints every table and writes benchmarks/results/latest.json and
# benchmarks/results/README-table.md (the README's tables, with the machine and this command).
# Run it on a quiet machine; it warns when the load average says otherwise.
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# The same machinery with short runs, to check it works; its figures are not for publishing.
bench-quick: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run_all.py --quick $(BENCH_ARGS)

# Servers, a TLS server and fault proxies under a seeded random schedule of every client fault,
# server fault and toxic, with invariants checked as it runs (benchmarks/soak.py says which).
# Exit status 1 on any violation; the seed and a replay command are printed.
# `make soak SOAK_DURATION=60 SOAK_SEED=1234` for a short, repeatable run.
SOAK_DURATION ?= 600
SOAK_SEED ?=
soak: $(VENV)/.installed-test
	$(BIN)/python benchmarks/soak.py --duration $(SOAK_DURATION) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

# --- cleanup -----------------------------------------------------------------

clean:
	rm -rf build dist site .nox *.egg-info src/*.egg-info htmlcov .coverage .coverage.* \
	       .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
