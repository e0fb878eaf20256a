# prefops developer entry points. On a fresh machine: `make demo` and `make test` install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
PREFOPS_CACHE ?= $(HOME)/.cache/prefops
KUBE_APISERVER := $(PREFOPS_CACHE)/kube-1.20.2/bin/kube-apiserver
KUBE_CONTROLLER_MANAGER := $(PREFOPS_CACHE)/kube-1.20.2/bin/kube-controller-manager
# The real servers the tests start; spinning OpenMP threads stall beside them on 2-core machines (30x measured)
export PREFOPS_KUBE_APISERVER := $(KUBE_APISERVER)
export PREFOPS_KUBE_CONTROLLER_MANAGER := $(KUBE_CONTROLLER_MANAGER)
export OMP_WAIT_POLICY ?= PASSIVE
# DeepSpeed compiles its CPU communication op on first use; keep it between runs, keyed by version
export TORCH_EXTENSIONS_DIR ?= $(PREFOPS_CACHE)/torch-extensions-torch2.13.0-ds0.19.8
# The stamp changes whenever a pin or a distribution's metadata changes, so `make setup` reinstalls then
# and is a no-op otherwise.
SETUP_STAMP := $(VENV)/.setup-$(shell cat constraints.txt tests/requirements.txt trainer/pyproject.toml $(wildcard operator/pyproject.toml) | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
BENCH_ARGS ?=
# nodes of `make cluster` and `make cluster-check` (the end-to-end tests start two: PREFOPS_E2E_NODES)
NODES ?= 1
# Every scripts/gen_*.py, sources first: the sweep CRD from the job CRD; then what copies or documents the CRDs (the
# chart's copy, the spec reference, the operator's known fields); then the operator's copies of the trainer's shared
# packages and the tables generated from the trainer's registries (a test checks every generator is listed).
GENERATORS := gen_sweep_crd gen_chart_files gen_spec_reference gen_operator_files gen_shared_copies \
	gen_prefix_sharing_table gen_algorithm_tables

.PHONY: help setup demo test test-unit e2e bench servers images cluster cluster-down cluster-check lint generate generate-check clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: $(SETUP_STAMP)  ## create .venv with both distributions (editable) and the test tools

$(SETUP_STAMP): constraints.txt tests/requirements.txt trainer/pyproject.toml $(wildcard operator/pyproject.toml)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip setuptools wheel
	@# torch first, from the pinned CPU build; everything after finds it satisfied and installs no CUDA wheels
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt transformers trl peft datasets accelerate
	@# DeepSpeed ships as an sdist: build it against the torch above, not an isolated CUDA torch
	$(PIP) install -c constraints.txt --no-build-isolation deepspeed
	$(PIP) install -c constraints.txt pyyaml pydantic pyarrow fsspec s3fs boto3 prometheus-client psutil tqdm matplotlib
	$(PIP) install -c constraints.txt kopf kubernetes 'moto[server]' pytest pytest-timeout ruff mypy import-linter dockerfile-parse helm-python-sdk
	$(PIP) install -c constraints.txt -r tests/requirements.txt
	$(PIP) install --no-deps -e trainer $(if $(wildcard operator/pyproject.toml),-e operator)
	@rm -f $(VENV)/.setup-*; touch $@

demo: setup  ## run the main job: local DPO on the tiny model in examples/tiny, model lands in out/demo
	$(VENV)/bin/prefops-trainer run examples/local-tiny-dpo.yaml

servers: setup  ## install and build the real servers the tests start (etcd, Kubernetes 1.20.2, prometheus)
	scripts/install-servers.sh "$(PREFOPS_CACHE)"

images:  ## build prefops/operator:dev and prefops/trainer:dev from images/ (podman or docker; cached by content)
	scripts/images.sh

cluster: images  ## a real Kubernetes here running both images (NODES=2: two nodes); admin kubeconfig in .cluster/
	scripts/cluster/cluster.sh up --nodes $(NODES)

cluster-down:  ## stop the cluster and undo every change it made to the host
	scripts/cluster/cluster.sh down

cluster-check: images  ## check that cluster-down leaves the host as it was before cluster (cluster must be down)
	scripts/cluster/cluster.sh check --nodes $(NODES)

test: lint servers images  ## lint first, then the whole test suite: unit, contract, integration, e2e on a node
	PY=$(PY) scripts/test.sh $(PYTEST_ARGS)

test-unit: setup  ## only the tests that need no server
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

e2e: setup servers images  ## only the whole-loop tests on a real node (started and stopped unless already up)
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

bench: setup servers  ## run every benchmark under bench/ and print their tables (BENCH_ARGS=--quick: a smoke run)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b $(BENCH_ARGS); done

generate: setup  ## rewrite every generated file from its source (scripts/gen_*.py, in dependency order)
	for g in $(GENERATORS); do $(PY) scripts/$$g.py; done

generate-check: setup  ## check that every generated file is current (each generator with --check; lint runs it)
	@stale=0; for g in $(GENERATORS); do $(PY) scripts/$$g.py --check || { echo "stale: scripts/$$g.py (run make generate)"; stale=1; }; done; exit $$stale

lint: setup generate-check  ## the generated files, ruff, the format check, the import-layer contracts and mypy (strict) of both distributions
	$(VENV)/bin/ruff check trainer operator tests bench scripts
	$(VENV)/bin/ruff format --check trainer operator tests bench scripts
	$(VENV)/bin/lint-imports --config operator/pyproject.toml
	$(VENV)/bin/lint-imports --config trainer/pyproject.toml
	cd operator && ../$(VENV)/bin/mypy
	cd trainer && ../$(VENV)/bin/mypy

clean:  ## remove build outputs and the demo's results (keeps .venv and the server cache)
	rm -rf out build .pytest_cache
