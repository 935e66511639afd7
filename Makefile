PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/default.yaml

.PHONY: run test bench bench-gateway bench-ui compat capture-conventions demo clean ui-vendor

# What running needs (make run), then the test extras on top (everything else).
RUNTIME := $(VENV)/.runtime-installed
$(RUNTIME): pyproject.toml setup.py pipeline/_otlp_columns.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUNTIME)

$(BIN)/spanpipe: $(RUNTIME)
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $(BIN)/spanpipe

run: $(RUNTIME)
	$(BIN)/spanpipe run --config $(CONFIG)

# A Node OTel agent for the tests (real @opentelemetry/sdk-node), from the npm registry.
NODE_AGENT := tests/node/node_modules/.package-lock.json
$(NODE_AGENT): tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

# Headless Chromium for the web viewer's browser tests, from Debian (Playwright drives it; nothing
# downloads a browser). Root installs it directly, anyone else through sudo.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium

# Byte-code compiled once: where PYTHONDONTWRITEBYTECODE is set, every collector, CLI and agent
# process the suite starts would compile each module again (0.45 s of CPU per collector).
# Three workers on two cores: with two, a fifth of the CPU sat idle while tests waited on
# servers, outages and timeouts (324 s; three: 291 s). Ports are per worker (tests/collector.py).
test: $(BIN)/spanpipe $(NODE_AGENT) $(CHROMIUM)
	$(BIN)/python -m compileall -q pipeline receivers processors exporters extensions tests examples > /dev/null
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup --ignore=tests/compat

# Live comparison with Microsoft Agent Lightning 0.3.0 (~150 packages), in a venv of its own so the
# project never depends on it. `make test` uses the fixtures this target checks.
COMPAT := .venv-compat
$(COMPAT)/bin/agl: pyproject.toml
	test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install -q --upgrade pip
	LITELLM_LOCAL_MODEL_COST_MAP=True $(COMPAT)/bin/pip install -q 'agentlightning==0.3.0' -e '.[test]'
	touch $(COMPAT)/bin/agl

compat: $(COMPAT)/bin/agl
	LITELLM_LOCAL_MODEL_COST_MAP=True $(COMPAT)/bin/python -m pytest -q tests/compat

# Record what current instrumentation libraries send (tests/conventions/capture.py), one venv per
# library so the project never depends on them; `make test` replays tests/fixtures/conventions/.
# AgentOps 0.4.21's exporter fails on OTel SDKs after 1.36 ('_headers'): it gets that SDK.
CAPTURE_PACKAGES_genai_latest := 'opentelemetry-instrumentation-openai-v2==2.4b0' 'opentelemetry-util-genai==1.1b0' openai httpx
CAPTURE_PACKAGES_genai_latest_events := $(CAPTURE_PACKAGES_genai_latest)
CAPTURE_PACKAGES_pydantic_ai := 'pydantic-ai-slim[openai]'
CAPTURE_PACKAGES_strands := 'strands-agents[openai]'
CAPTURE_PACKAGES_agentops := agentops openai 'opentelemetry-sdk==1.36.0' 'opentelemetry-api==1.36.0' \
	'opentelemetry-proto==1.36.0' 'opentelemetry-exporter-otlp-proto-http==1.36.0' \
	'opentelemetry-exporter-otlp-proto-grpc==1.36.0' 'opentelemetry-exporter-otlp-proto-common==1.36.0' \
	'opentelemetry-instrumentation==0.57b0' 'opentelemetry-semantic-conventions==0.57b0'
CAPTURED := genai_latest genai_latest_events pydantic_ai strands agentops

capture-conventions:
	for lib in $(CAPTURED); do \
	  test -x .venv-capture-$$lib/bin/python || $(PYTHON) -m venv .venv-capture-$$lib; \
	done
	$(foreach lib,$(CAPTURED),.venv-capture-$(lib)/bin/pip install -q -e . $(CAPTURE_PACKAGES_$(lib)) && \
	  .venv-capture-$(lib)/bin/python tests/conventions/capture.py $(lib) &&) true

demo: $(BIN)/spanpipe
	$(BIN)/python examples/run_demo.py

bench: $(BIN)/spanpipe
	$(BIN)/python bench/load.py

# The llm_gateway against direct calls and a LiteLLM proxy (in a venv of its own).
LITELLM := .venv-litellm
$(LITELLM)/bin/litellm:
	test -x $(LITELLM)/bin/python || $(PYTHON) -m venv $(LITELLM)
	$(LITELLM)/bin/pip install -q --upgrade pip
	LITELLM_LOCAL_MODEL_COST_MAP=True $(LITELLM)/bin/pip install -q 'litellm[proxy]'

bench-gateway: $(BIN)/spanpipe $(LITELLM)/bin/litellm
	$(BIN)/python bench/gateway.py --litellm $(LITELLM)/bin/litellm --workers 0,2

# The web viewer's browser library (Chart.js), pinned in pipeline/ui/vendor/package-lock.json. Its
# built file and licences are committed under pipeline/ui/static/vendor, so installing never needs node.
ui-vendor:
	npm ci --prefix pipeline/ui/vendor --no-audit --no-fund --loglevel=error
	cp pipeline/ui/vendor/node_modules/chart.js/dist/chart.umd.min.js pipeline/ui/static/vendor/
	cp pipeline/ui/vendor/node_modules/chart.js/LICENSE.md pipeline/ui/static/vendor/chart.js-LICENSE.md
	cp pipeline/ui/vendor/node_modules/@kurkle/color/LICENSE.md pipeline/ui/static/vendor/kurkle-color-LICENSE.md

clean:
	rm -rf $(VENV) $(COMPAT) $(LITELLM) .venv-capture-* data
