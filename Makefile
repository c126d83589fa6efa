# edge-ai: `make serve` and `make test` each install everything first (into .venv) and then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install serve test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	$(BIN)/edge-ai fetch-models --models-dir models
	touch $(STAMP)

serve: install
	$(BIN)/edge-ai serve

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
