PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local

.PHONY: run test build synth lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make run` installs what the local stack needs (the runtime's packages, moto, the gateway's server) and
# the Python client (clients/python: the CLI's runs commands use it); `make test` the CDK app and the test
# tools besides.
CLIENT := clients/python/pyproject.toml

$(LOCAL_STAMP): pyproject.toml $(CLIENT) | $(BIN)/python
	@echo "installing the local stack's packages and the client into $(VENV) (no CDK, no test tools)..."
	$(BIN)/python -m pip install --quiet -e ".[local]" -e clients/python
	touch $(LOCAL_STAMP)

$(STAMP): pyproject.toml $(CLIENT) | $(BIN)/python
	@echo "installing the local stack's, the CDK app's and the tests' packages into $(VENV)..."
	$(BIN)/python -m pip install --quiet -e ".[dev]" -e clients/python
	touch $(STAMP) $(LOCAL_STAMP)

run: $(LOCAL_STAMP)
	RUNPLANE_ALLOW_LOOPBACK=$${RUNPLANE_ALLOW_LOOPBACK:-1} $(BIN)/runplane local

# pytest on every core: tests sharing a module's or folder's fixture stay on one worker (tests/conftest.py).
# PYTEST_WORKERS=0 runs it in this process.
PYTEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# The Lambda asset for `cdk deploy`: arm64 wheels and the runplane package, no Docker (infra/bundle.py).
build: $(STAMP)
	$(BIN)/python -m infra.bundle

synth: build
	$(BIN)/python app.py

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .runplane .pytest_cache .ruff_cache cdk.out build node_modules
