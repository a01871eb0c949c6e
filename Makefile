# Streamside: `make run` serves the demo, `make test` runs every test. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run install migrate test lint bench bench-workers simulator clean local-model local-model-install \
	local-model-stop local-model-bench

## install: the virtualenv from requirements.txt and the npm packages from package-lock.json
install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

migrate: install
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput

## run: install, migrate and serve with Daphne on http://$(HOST):$(PORT) (SQLite, simulator)
run: migrate
	@echo "Streamside on http://$(HOST):$(PORT)/"
	DEBUG=$${DEBUG:-1} $(BIN)/daphne -b $(HOST) -p $(PORT) chatsite.asgi:application

## test: the whole suite (browser tests skip, and say so, where chromium is missing)
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench: relay latency, throughput, bytes per answer byte and memory (not part of the tests)
bench: install
	$(BIN)/python -m bench.relay $(BENCH_ARGS)

## bench-workers: the same streams on one worker and on two (Redis layer): latency, tok/s, scaling
bench-workers: install
	$(BIN)/python -m bench.workers $(BENCH_ARGS)

## simulator: the upstream simulator alone, on SIM_PORT (default 8001)
simulator: install
	$(BIN)/python -m simulator --host 127.0.0.1 --port $${SIM_PORT:-8001}

clean:
	rm -rf $(VENV) node_modules staticfiles .pytest_cache .ruff_cache

## local-model: SmolLM2-135M-Instruct under llama.cpp's OpenAI-compatible server on
## 127.0.0.1:LOCAL_MODEL_PORT (default 8002), offline, in the background, registered as the
## provider "Local SmolLM2". The first run compiles llama.cpp (about 9 minutes on 2 cores).
## local-model-stop stops it; local-model-bench prints time to first token and tokens/s.
LOCAL_VENV ?= .venv-local-model
LOCAL_MODEL_PORT ?= 8002

local-model: migrate local-model-install
	LOCAL_MODEL_VENV=$(LOCAL_VENV) $(LOCAL_VENV)/bin/python -m localmodel.server start \
		--port $(LOCAL_MODEL_PORT)
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py set_provider "Local SmolLM2" --protocol openai \
		--base-url http://127.0.0.1:$(LOCAL_MODEL_PORT)/v1 --models smollm2-135m
	@echo "Now \`make run\` and pick the provider Local SmolLM2, model smollm2-135m."

local-model-install: $(LOCAL_VENV)/.installed

$(LOCAL_VENV)/.installed: localmodel/requirements.txt localmodel/server-requirements.txt localmodel/build-constraints.txt
	test -x $(LOCAL_VENV)/bin/python || $(PYTHON) -m venv $(LOCAL_VENV)
	$(LOCAL_VENV)/bin/python -m pip install --quiet pip==26.3
	$(LOCAL_VENV)/bin/python -m pip install --quiet -r localmodel/server-requirements.txt
	@echo "Compiling llama.cpp for llama-cpp-python: about 9 minutes on 2 cores..."
	$(LOCAL_VENV)/bin/python -m pip install --quiet --no-deps --require-hashes \
		--build-constraint localmodel/build-constraints.txt -r localmodel/requirements.txt
	touch $@

local-model-stop:
	$(PYTHON) -m localmodel.server stop

local-model-bench:
	$(PYTHON) -m localmodel.bench --base-url http://127.0.0.1:$(LOCAL_MODEL_PORT)/v1
