# clinmm — set-up and the two README commands (`make demo`, `make test`).
# The virtual environment is created once and reused; it is refreshed only when pyproject.toml or the
# constraints change. Without an NVIDIA GPU the CPU build of torch is pinned (see docs/install.md for CUDA).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.clinmm-installed
RAY_STAMP := $(VENV)/.clinmm-ray-installed
DEMO_SERVE ?= 1
DEMO_STUDIES ?= 1000
DEMO_SEED ?= 0
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-slow test-e2e install clean-demo help

help:
	@echo "make demo       set up, generate sample data, train, score, report, serve the dashboard on localhost:8501"
	@echo "                (DEMO_SERVE=0 make demo: everything except serving)"
	@echo "make test       set up and run the default test suite"
	@echo "make test-slow  the slow tests (long fuzzing, browser, Ray, DDP) — CI runs them as a separate step"

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
ifeq ($(HAS_CUDA),1)
	$(PIP) install -q -e ".[test]"
else
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints-cpu.txt -e ".[test]"
endif
	$(PIP) install -q --no-deps -c constraints-cpu.txt torchxrayvision
	@touch $(STAMP)

install: $(STAMP)

# The Ray extra (for the Ray engine's slow test): only the slow step needs it; ray and its new dependencies are pinned
# in constraints-cpu.txt, torch is left as the main install put it.
$(RAY_STAMP): $(STAMP)
ifeq ($(HAS_CUDA),1)
	$(PIP) install -q -e ".[test,ray]"
else
	$(PIP) install -q -c constraints-cpu.txt -e ".[test,ray]"
endif
	@touch $(RAY_STAMP)

demo: $(STAMP)
	$(PY) -m clinmm.cli demo --root . --studies $(DEMO_STUDIES) --seed $(DEMO_SEED) $(if $(filter 0,$(DEMO_SERVE)),--no-serve,--serve)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(RAY_STAMP)
	$(PY) -m pytest -q -m slow

clean-demo:
	rm -rf sample_data/demo runs/demo
