# `make run`: set up (once) and start the app with the embedded model. `make test`: set up, run every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup run test lint bench conformance train clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) app.py $(ARGS)

test: setup
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest -q $(ARGS)

lint: setup
	$(VENV)/bin/ruff check janusflow_core app tests bench studies tools app.py

conformance: setup
	$(PY) -m janusflow_core.conformance ../shared/fixtures/official-tiny-a out/conformance-a.safetensors

# the core benchmark: the 1.3B architecture with random weights (docs/benchmarks.md; ARGS="--dtype fp32 ...")
bench: setup
	$(PY) -m bench.bench_core $(ARGS)

# two CPU processes (DDP over gloo), one thread each: how the shipped model was trained
train: setup
	PYTHONPATH=. OMP_NUM_THREADS=1 $(VENV)/bin/accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
		--mixed_precision no --dynamo_backend no -m janusflow_core.training.shapes_recipe --out assets/janusflow-shapes

clean:
	rm -rf $(VENV) out .pytest_cache
