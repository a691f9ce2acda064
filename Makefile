# Set-up and the two everyday jobs. `make demo` and `make test` work on a fresh machine:
# they create .venv, install the CPU build of torch and pixelreason, then run.
VENV ?= .venv
PYTHON ?= python3
# The CPU build; on a GPU machine use e.g. `make TORCH=torch test`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo serve test lint bench default-model clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/pixelreason segment examples/world.png "What would you use to cut paper?" --out runs/demo

serve: setup
	$(BIN)/pixelreason serve --model default

test: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/latency.py

# The bundled default model, from scratch, in one command: its ten recipes in order (a rerun
# resumes at the unfinished one), then its pixel colours counted on 2000 scenes (seconds), its
# object cuts and category map trained on fresh scenes (about 50 min each on the CPU), then
# its knowledge adapter (a LoRA on the finished model's LLM, 12 min on the CPU) put beside it.
# default-gpu, default-stage3 and default-stage7 were run on an H100; on a CPU they take hours.
DEFAULT_STAGES := default default-gpu default-stage3 vision-refit default-stage5 \
  pretrain-tower default-tower default-stage7 default-colour default-presence
default-model: setup
	$(BIN)/pixelreason train $(DEFAULT_STAGES:%=recipes/%.yaml)
	$(BIN)/pixelreason fit-colours runs/default-presence/model --scenes 2000
	$(BIN)/pixelreason fit-object-cuts runs/default-presence/model --steps 3000
	$(BIN)/pixelreason fit-category-map runs/default-presence/model --steps 2000
	$(BIN)/pixelreason train recipes/default-knowledge.yaml
	rm -rf runs/default-presence/model/knowledge_adapter
	cp -r runs/default-knowledge/model runs/default-presence/model/knowledge_adapter

clean:
	rm -rf $(VENV) runs
