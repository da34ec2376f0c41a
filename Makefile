# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
SAM_VENV ?= .venv-sam
PY := $(VENV)/bin/python
CHROMIUM ?= /usr/bin/chromium
export PYTHONPATH := $(CURDIR):$(CURDIR)/layers/common
export SAM_CLI_TELEMETRY := 0

.PHONY: help venv browser test unit integration e2e lint typecheck validate-sam demo local clean bench bench-scheduler openapi

help:
	@echo "make demo      run a real workset through the local stack, end to end"
	@echo "make test      install what the tests need, then lint, type-check and run every test"
	@echo "make local     keep the local stack up (emulator on :4566, API on :3000); writes .local/stack.json"
	@echo "make validate-sam   sam validate --lint on the template (installs the SAM CLI in $(SAM_VENV))"
	@echo "make bench     AWS calls per operation"
	@echo "make bench-scheduler  plan and tick time and calls, 1,000 to 100,000 ready worksets"
	@echo "make openapi   write openapi.json from the API's code (a test fails when it drifts)"

$(VENV)/.installed: requirements-dev.txt layers/common/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The dashboard's browser test drives Debian's Chromium (Playwright's own browser download cannot work offline).
$(CHROMIUM):
	@echo "installing Debian's chromium for the dashboard's browser test"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

browser: $(CHROMIUM)
	@:

test: venv browser lint typecheck
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

integration: venv
	$(PY) -m pytest tests/integration

e2e: venv
	$(PY) -m pytest tests/e2e

lint: venv
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli==1.170.0
	touch $@

validate-sam: $(SAM_VENV)/.installed
	AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline $(SAM_VENV)/bin/sam validate --lint --region us-west-2

demo: venv
	$(PY) -m local.demo

local: venv
	$(PY) -m local.stack

clean:
	rm -rf $(VENV) $(SAM_VENV) .local .aws-sam .pytest_cache .mypy_cache .ruff_cache

bench: venv
	$(PY) -m benchmarks.aws_calls

bench-scheduler: venv
	$(PY) -m benchmarks.scheduling

openapi: venv
	$(PY) -m tools.openapi
