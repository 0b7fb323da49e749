# One command sets up and fits the bundled image; one sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch and torchvision must come as a matching pair (the CPU-only torch wheel cannot import
# PyPI's torchvision); the CUDA build of this pair runs on CPU too.
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

demo: $(STAMP)
	$(PY) train.py --config configs/quickstart.yaml --image examples/kodim23.png --out runs/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)  # the figures in docs/ and the README, each into its committed JSON (about 1 h 35 min)
	$(PY) bench/render.py --json bench/results/render.json
	$(PY) bench/batch.py --terms l1 --json bench/results/batch.json
	$(PY) bench/balancers.py --rounds 3 --json bench/results/balancers.json
	$(PY) bench/quality.py --repeats 3 --json bench/results/quality.json
	$(PY) bench/quality.py --size 768 --json bench/results/quality_768.json
	$(PY) bench/model.py --json bench/results/model.json
	$(PY) bench/perceptual.py --json bench/results/perceptual.json
	$(PY) bench/gpu.py --bins --json bench/results/bins.json

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH_PAIR)
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m triangulate_ai.raster.fused --build
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
