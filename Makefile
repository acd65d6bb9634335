# Two supported stacks, each in its own virtualenv:
#   py311: Python 3.11 + mitmproxy 11.0.x
#   py312: the newest Python >= 3.12 found + the newest mitmproxy 12.x (skipped if none found)
PY311 ?= $(shell .ci/find-python 3.11)
PY312 ?= $(shell .ci/find-python 3.14 3.13 3.12)
V311 := .venv/py311
V312 := .venv/py312
PIP_QUIET := --quiet --disable-pip-version-check
PYTEST_ARGS ?=
LISTEN ?= 127.0.0.1
PORT ?= 8080

.PHONY: test test-fast test-311 test-312 lint run demo bench clean

test: lint test-311 test-312

# Unit and in-process tests only (no real processes): the quick loop while editing.
test-fast: $(V311)/.installed
	$(V311)/bin/python -m pytest -m "not e2e" $(PYTEST_ARGS)

$(V311)/.installed: pyproject.toml
	@test -n "$(PY311)" || { echo "Python 3.11 not found (set PY311=/path/to/python3.11)"; exit 1; }
	rm -rf $(V311) && $(PY311) -m venv $(V311)
	$(V311)/bin/pip install $(PIP_QUIET) 'mitmproxy>=11.0,<11.1' -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	$(V311)/bin/python -c "import mitmproxy.version as v, expect_ct; print('py311 stack: mitmproxy', v.VERSION)"
	touch $@

$(V312)/.installed: pyproject.toml
	rm -rf $(V312) && $(PY312) -m venv $(V312)
	$(V312)/bin/pip install $(PIP_QUIET) 'mitmproxy>=12,<13' -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	$(V312)/bin/python -c "import mitmproxy.version as v, expect_ct; print('py312 stack: mitmproxy', v.VERSION)"
	touch $@

test-311: $(V311)/.installed
	@echo "=== stack: $$($(V311)/bin/python --version), mitmproxy 11.0.x ==="
	$(V311)/bin/python -m pytest $(PYTEST_ARGS)

test-312:
	@if [ -z "$(PY312)" ]; then echo "=== stack py312: skipped, no Python >= 3.12 on this machine ==="; \
	else $(MAKE) --no-print-directory $(V312)/.installed && \
	  echo "=== stack: $$($(V312)/bin/python --version), mitmproxy 12.x ===" && \
	  $(V312)/bin/python -m pytest $(PYTEST_ARGS); fi

lint: $(V311)/.installed
	$(V311)/bin/ruff check addon tests benchmarks demo docs
	$(V311)/bin/ruff format --check addon tests benchmarks demo docs
	$(V311)/bin/mypy

run: $(V311)/.installed
	$(V311)/bin/mitmdump --listen-host $(LISTEN) -p $(PORT) -s addon/expect_ct_addon.py $(ARGS)

# A self-contained story on 127.0.0.1 (demo/demo.py): DEMO_ARGS=--keep keeps its temp directory.
demo: $(V311)/.installed
	$(V311)/bin/python demo/demo.py $(DEMO_ARGS)

bench: $(V311)/.installed
	$(V311)/bin/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf .venv build *.egg-info addon/*.egg-info .pytest_cache .mypy_cache .ruff_cache
