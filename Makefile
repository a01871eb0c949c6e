# Streamside: `make run` serves the demo, `make test` runs every test. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run install migrate test lint bench bench-page bench-workers screenshots simulator clean local-model local-model-install \
	local-model-stop local-model-bench messages

## install: the virtualenv from requirements.txt, the npm packages from package-lock.json and the
## compiled translations (locale/*/LC_MESSAGES/django.mo, from the .po files; needs GNU gettext)
MO_FILES := $(patsubst %.po,%.mo,$(wildcard locale/*/LC_MESSAGES/django.po))
install: $(VENV)/.installed node_modules/.installed $(MO_FILES)

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Only the project's own catalogues: compilemessages would otherwise walk into .venv.
locale/%/LC_MESSAGES/django.mo: locale/%/LC_MESSAGES/django.po $(VENV)/.installed
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py compilemessages --locale $* \
		--ignore '.*' --ignore node_modules --ignore staticfiles
	touch $@

## messages: refresh the catalogues from the sources (then translate what is new; README "Languages")
messages: install
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py makemessages --all --add-location file \
		$(foreach d,.* node_modules staticfiles tests bench simulator localmodel docs,--ignore '$(d)')

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
	$(BIN)/djhtml --check templates
	DEBUG=$${DEBUG:-1} $(BIN)/mypy

## bench: relay latency, throughput, bytes per answer byte, memory, a stuck reader and Enter ->
## upstream, each against the baseline relay measured in the same run (not part of the tests),
## then bench-page, then bench.markdown (live markdown splitting in a long code fence, old
## algorithm vs new; it takes only --smoke of BENCH_ARGS, its own options in
## BENCH_MARKDOWN_ARGS). BENCH_ARGS passes options: `make bench BENCH_ARGS=--smoke` (about a
## minute, never fails a target; what CI runs), --quick, --streams 1,100,200 ...
bench: install
	$(BIN)/python -m bench.relay $(BENCH_ARGS)
	$(BIN)/python -m bench.page $(BENCH_PAGE_ARGS)
	$(BIN)/python -m bench.markdown $(filter --smoke,$(BENCH_ARGS)) $(BENCH_MARKDOWN_ARGS)

## bench-page: the chat page's JavaScript (raw, gzipped) and its server render time, 200 messages
bench-page: install
	$(BIN)/python -m bench.page $(BENCH_PAGE_ARGS)

## bench-workers: the same streams on one worker (in-process layer, then Redis) and on two (Redis),
## on PostgreSQL, against the baseline relay: latency, saturation tok/s, scaling, Enter -> upstream.
## `make bench-workers BENCH_ARGS=--smoke` runs every phase briefly (CI)
bench-workers: install
	$(BIN)/python -m bench.workers $(BENCH_ARGS)

## screenshots: the README's screenshots (chat, thinking, comparison; English and Chinese), from
## the real app in Debian's chromium, into docs/
screenshots: install
	$(BIN)/python -m docs.screenshots

## simulator: the upstream simulator alone, on SIM_PORT (default 8001)
simulator: install
	$(BIN)/python -m simulator --host 127.0.0.1 --port $${SIM_PORT:-8001}

clean:
	rm -rf $(VENV) node_modules staticfiles .pytest_cache .ruff_cache .mypy_cache

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
