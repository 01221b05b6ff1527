PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch's CPU build (a wheel on the reference machines' disk; 2.5 GB in the venv with the rest) unless
# the machine has an NVIDIA driver: the CUDA build needs some 6 GB, more than a CI machine's free disk
# has held. Override with e.g. `make install TORCH=torch==2.14.1`.
TORCH ?= $(if $(shell command -v nvidia-smi),torch==2.14.1,torch==2.13.0)
# The torch in .venv as a pip constraint (torch==<version>), which make bench installs under and checks.
TORCH_PIN := $(VENV)/torch-pin.txt
write_torch_pin = $(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(TORCH_PIN)

# a failed recipe leaves no half-written target (an empty torch pin would look up to date)
.DELETE_ON_ERROR:

.PHONY: help install test test-all lint docs bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The anchors of `make bench`, pinned: installed without their dependencies, which would replace the
# project's torch (SpikingJelly's torchvision pulls the 6 GB CUDA build); the `bench` extra lists what they
# import besides torch.
ANCHORS := snntorch==1.0.0 spikingjelly==2.0.0
BENCH_ARGS ?= --batches 100

install:  ## create .venv and install nwtrain with its dev and sweep extras
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --no-cache-dir --upgrade pip
	$(BIN)/pip install --no-cache-dir '$(TORCH)'
	$(write_torch_pin)
	$(BIN)/pip install --no-cache-dir -e '.[dev,sweep]'

test:  ## run the default test suite (slow tests excluded)
	$(BIN)/pytest -q

test-all:  ## run every test, slow ones included
	$(BIN)/pytest -q -m ''

# A .venv made before make install wrote the pin gets it from the torch it holds.
$(TORCH_PIN):
	$(write_torch_pin)

bench: $(TORCH_PIN)  ## training speed against snnTorch and SpikingJelly (installs them; .venv keeps its torch)
	$(BIN)/pip install --constraint $(TORCH_PIN) -e '.[bench]'
	$(BIN)/pip install --no-deps $(ANCHORS)
	$(BIN)/python bench/train_speed.py --torch-pin $(TORCH_PIN) $(BENCH_ARGS)

docs:  ## the API reference from the docstrings, in docs/api/ (open docs/api/index.html)
	$(BIN)/pdoc --docformat restructuredtext --output-directory docs/api nwtrain

lint:  ## ruff check and ruff format --check (CI runs both)
	$(BIN)/ruff check nwtrain tests bench
	$(BIN)/ruff format --check nwtrain tests bench

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
