# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-min lint bench clean fuzz dist soak

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,hsm]'
	# An editable install has no data files: link the pages where `man` looks (PATH/../share/man).
	mkdir -p $(VENV)/share/man
	for s in 1 5 7; do ln -sfn $(abspath man) $(VENV)/share/man/man$$s; done
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH sh examples/demo.sh

test: $(STAMP) lint
	$(PY) -m pytest

# The suite against the oldest versions pyproject.toml allows (.ci/min-constraints.txt), in a
# venv of its own, so that a minimum pin that is too low fails here rather than for a user.
MIN_VENV ?= .venv-min
test-min:
	python3 -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip
	$(MIN_VENV)/bin/python -m pip install -q -c .ci/min-constraints.txt -e '.[test,hsm]'
	$(MIN_VENV)/bin/python -m pip check
	$(MIN_VENV)/bin/python -m pytest -p no:cacheprovider

# A wheel and an sdist in dist/ (man pages, LICENSE and examples included).
dist: $(STAMP)
	$(PY) -m pip install -q build
	$(PY) -m build --outdir dist .

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/table.py

fuzz: $(STAMP)
	$(PY) bench/fuzz_cli.py --examples $${EXAMPLES:-2000}

# Soak: 8 processes against one machine for MINUTES (default 1), with random SIGKILLs.
soak: $(STAMP)
	$(PY) bench/soak.py --minutes $${MINUTES:-1}

clean:
	rm -rf $(VENV) $(MIN_VENV) build dist demo-out *.egg-info .pytest_cache .mypy_cache .ruff_cache
