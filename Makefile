# Streamside: `make run` serves the demo, `make test` runs every test. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run install migrate test lint bench simulator clean

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

## simulator: the upstream simulator alone, on SIM_PORT (default 8001)
simulator: install
	$(BIN)/python -m simulator --host 127.0.0.1 --port $${SIM_PORT:-8001}

clean:
	rm -rf $(VENV) node_modules staticfiles .pytest_cache .ruff_cache
