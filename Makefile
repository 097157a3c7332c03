# Set-up and entry points. Every target creates the virtual environment first if needed.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3

# Keep every tool quiet and its state inside the project (see docs/reference/state.md).
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export NML_DISABLE_USAGE_LOGGING := 1
export PATH := $(BIN):$(PATH)

.PHONY: setup run test lint format flow ui bench clean profile sweep approve reject rollback signoff-record evidence batches monitor
.PHONY: site-env test-fast docs docs-serve

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build; anything looser pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# The site environment of federated training (docs/how-to/federated.md): Flower 1.42 pins typer, rich,
# packaging and protobuf below what the main lock needs, so a site's node (and the coordinator's SuperLink) run
# from their own venv: torch first (the CPU build), then requirements-site.txt, then humane without dependencies.
# Reinstalled only when requirements-site.txt or pyproject.toml is newer than its stamp.
SITE_ENV ?= .site-env
site-env:  ## the federated site environment .site-env (torch, flwr 1.42, what a site needs)
	test -x $(SITE_ENV)/bin/python || $(PYTHON) -m venv $(SITE_ENV)
	test requirements-site.txt -ot $(SITE_ENV)/.installed -a pyproject.toml -ot $(SITE_ENV)/.installed || { \
		$(SITE_ENV)/bin/pip install --quiet torch==2.13.0 && \
		$(SITE_ENV)/bin/pip install --quiet -r requirements-site.txt && \
		$(SITE_ENV)/bin/pip install --quiet --no-deps -e . && touch $(SITE_ENV)/.installed; }

run: setup  ## set up and run the whole pipeline on the built-in dataset (dvc repro)
	dvc repro

test: setup site-env  ## set up (with the federated site environment) and run the test suite
	pytest

test-fast: setup  ## the unit tests not marked slow (no servers, no pipeline runs, no docs build): under two minutes
	pytest tests/unit -m "not slow"

docs: setup  ## build the documentation site offline into site/ (mkdocs, Material theme; fails on a broken link)
	mkdocs build --strict

docs-serve: setup  ## serve the documentation site on http://127.0.0.1:8000 while you edit docs/
	mkdocs serve -a 127.0.0.1:8000

lint: setup
	ruff check .
	ruff format --check .

format: setup
	ruff check --fix .
	ruff format .

PROFILE ?= profiles/adult.yaml
profile: setup  ## switch datasets: copy a profile's data, privacy and policy into params.yaml (PROFILE=profiles/x.yaml)
	python -m humane.pipeline.profiles use $(PROFILE)

sweep: setup  ## the bias-mitigation sweep (params.yaml sweep:): candidates in parallel, the front, the choice, then training
	python -m flows.sweep

MODEL ?= humane-adult
BY ?=
approve: setup  ## sign off a pending candidate as your account: make approve VERSION=7 COMMENT="why" [BY="shown name"]
	python -m tasks.approve $(MODEL) $(VERSION) --approve --comment "$(COMMENT)" $(if $(BY),--by "$(BY)")

reject: setup  ## reject a pending candidate: make reject VERSION=7 COMMENT="why"
	python -m tasks.approve $(MODEL) $(VERSION) --reject --comment "$(COMMENT)" $(if $(BY),--by "$(BY)")

TO ?=
rollback: setup  ## move champion back, recorded: make rollback TO=5 COMMENT="why" (no TO: no champion)
	python -m tasks.rollback $(MODEL) $(if $(TO),--to $(TO),--none) --comment "$(COMMENT)"

signoff-record: setup  ## one version's audit record for an auditor (reports/signoff/): make signoff-record VERSION=7
	python -m tasks.approve $(MODEL) $(VERSION) --export

evidence: setup  ## one version's evidence against the EU AI Act Annex IV and NIST AI RMF (reports/evidence/): make evidence VERSION=7
	python -m tasks.evidence $(MODEL) $(VERSION)

flow: setup  ## run the same pipeline as a local Prefect flow
	python -m flows.training

batches: setup  ## demo production batches under data/batches/ (in distribution, shifted, widened sex gap)
	python -m humane.monitoring.demo

BATCH ?= data/batches/in_distribution.csv
monitor: setup  ## monitor the champion on one batch (BATCH=...): exit 0 ok, 3 BiasDegraded, 4 PerformanceDegraded, 5 DriftDetected
	python -m flows.monitoring $(BATCH)

ui: setup  ## the MLflow UI on the project's default store, opened on its model-training view
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench: run  ## full-Adult benchmarks: quality, fairness, throughput, timings; then privacy (ε, MIA, k)
	python bench/pipeline.py
	python bench/privacy.py

clean:  ## remove pipeline outputs and local tracking state (keeps the venv)
	rm -rf data/interim data/processed models reports mlflow.db mlflow.db.lock mlartifacts .prefect

# Team mode: a complete local stack on 127.0.0.1, everything under one folder (default .team/, HUMANE_TEAM_DIR
# overrides), stopped by PID: PostgreSQL 15, the MLflow server with authentication, the Prefect server and a process
# worker, an OpenSSH server for the DVC remote. Settings: $(TEAM_DIR)/team.env; admin secrets: $(TEAM_DIR)/secrets/.
TEAM_DIR ?= $(or $(HUMANE_TEAM_DIR),$(CURDIR)/.team)
TEAM_ACCOUNTS ?= team/accounts.example.yaml
.PHONY: team-up team-down team-bootstrap

team-up: setup  ## start the local team stack (python -m team.stack status shows it)
	python -m team.stack up --dir "$(TEAM_DIR)"

team-down: setup  ## stop the local team stack (data kept; `python -m team.stack down --purge` deletes it)
	python -m team.stack down --dir "$(TEAM_DIR)"

team-bootstrap: setup  ## users, permissions, models, pool, mutex, trail schema (TEAM_ACCOUNTS=); local stack unless MLFLOW_TRACKING_URI set
	@if [ -z "$$MLFLOW_TRACKING_URI" ] && [ -f "$(TEAM_DIR)/team.env" ]; then \
		set -a; . "$(TEAM_DIR)/team.env"; . "$(TEAM_DIR)/secrets/admin.env"; set +a; fi; \
	HUMANE_TEAM_DIR="$(TEAM_DIR)" python -m team.bootstrap --settings "$(TEAM_ACCOUNTS)"
