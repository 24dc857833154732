# The two set-up commands of the README: `make demo` and `make test`. Each creates or refreshes
# .venv (Python 3.10, pinned stack) first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
REFERENCE := reference-data
DEMO_OUT := demo-output

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test test-isa test-all lint bench reference clean screenshot docs

venv:
	@bash scripts/setup_venv.sh

reference: venv
	@if [ ! -f $(REFERENCE)/.complete ]; then $(VENV)/bin/tfxopt example-data $(REFERENCE); fi

demo: venv
	@REFERENCE=$(REFERENCE) DEMO_OUT=$(DEMO_OUT) bash scripts/demo.sh

# scripts/run_tests.sh installs Chromium (report check in a browser), MariaDB (ML Metadata on
# MySQL) and kubectl (renders the k8s overlays) where it can; without root it runs the rest and
# lists what it skipped.
test: venv
	@bash scripts/run_tests.sh -m "not slow" tests

# The same suite with TensorFlow's oneDNN kernels held to AVX2 (ONEDNN_MAX_CPU_ISA): it moves
# TensorFlow's own kernels (training, the SavedModel's inference, so trained weights and
# accuracies), not TFLite's. XNNPACK, which runs the flatbuffers, picks its kernels from the
# processor itself, so latencies and int8 speed stay this machine's; only another processor
# shows those.
test-isa: venv
	@ONEDNN_MAX_CPU_ISA=AVX2 bash scripts/run_tests.sh -m "not slow" tests

test-all: venv
	@bash scripts/run_tests.sh tests

lint: venv
	$(VENV)/bin/ruff check .

bench: reference
	$(PY) -m benchmarks.run --reference $(REFERENCE)

# docs/report-screenshot.png from the last `make demo` (headless Chromium).
screenshot: venv
	@bash scripts/install_chromium.sh
	$(PY) scripts/report_screenshot.py $(DEMO_OUT)/report.html docs/report-screenshot.png

# The generated docs: the config reference, and RESULTS.md from results.json.
docs: venv
	$(PY) scripts/config_reference.py
	$(PY) -m benchmarks.run --render

clean:
	rm -rf $(DEMO_OUT) $(REFERENCE) .pytest_cache
