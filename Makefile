# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check lint bench clean fuzz soak

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH sh examples/demo.sh

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

fuzz: $(STAMP)
	$(PY) bench/fuzz_cli.py --examples $${EXAMPLES:-2000}

# Soak: 8 processes against one machine for MINUTES (default 1), with random SIGKILLs.
soak: $(STAMP)
	$(PY) bench/soak.py --minutes $${MINUTES:-1}

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
