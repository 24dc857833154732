# The two set-up commands of the README: `make demo` and `make test`. Each creates or refreshes
# .venv (Python 3.10, pinned stack) first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
REFERENCE := reference-data
DEMO_OUT := demo-output

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test test-isa test-all lint bench reference clean

venv:
	@bash scripts/setup_venv.sh

reference: venv
	@if [ ! -f $(REFERENCE)/.complete ]; then $(VENV)/bin/tfxopt example-data $(REFERENCE); fi

demo: venv
	@REFERENCE=$(REFERENCE) DEMO_OUT=$(DEMO_OUT) bash scripts/demo.sh

test: venv
	@bash scripts/install_chromium.sh   # the report is checked in a real browser
	@bash scripts/install_mariadb.sh    # ML Metadata on a real MySQL-compatible server
	@bash scripts/install_kubectl.sh    # renders the k8s overlays (tests/test_k8s_manifests.py)
	$(PY) -m pytest -m "not slow" tests

# The same suite with TensorFlow's oneDNN kernels held to AVX2, the code path of AVX2-only processors
# (trained weights and accuracies move with the instruction set; the tests must hold on both).
test-isa: venv
	@bash scripts/install_chromium.sh
	@bash scripts/install_mariadb.sh
	@bash scripts/install_kubectl.sh
	ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -m "not slow" tests

test-all: venv
	@bash scripts/install_chromium.sh
	@bash scripts/install_mariadb.sh
	@bash scripts/install_kubectl.sh
	$(PY) -m pytest tests

lint: venv
	$(VENV)/bin/ruff check .

bench: reference
	$(PY) -m benchmarks.run --reference $(REFERENCE)

clean:
	rm -rf $(DEMO_OUT) $(REFERENCE) .pytest_cache
