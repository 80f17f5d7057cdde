# vsm_kit: `make demo` runs the pipeline notebooks on the embedded demo world; `make test` runs every test.
# Both build the virtual environment first when it is missing or requirements changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# DeepSpeed's JIT-built ops live in the venv, built once by `make venv`: no test waits for (or
# kills) a build, and no other checkout's venv shares or rebuilds them
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions
DS_OPS := ShareMemCommBuilder FusedAdamBuilder CPUAdamBuilder

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
DEMO_DIR := runs/demo

.PHONY: venv demo test lint clean browser-deps

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	DS_ACCELERATOR=cpu $(PY) -c 'import sys; from deepspeed.accelerator import get_accelerator; \
	  [get_accelerator().create_op_builder(n).load() for n in sys.argv[1:]]' $(DS_OPS)
	touch $@

# notebook 03 trains the whole demo recipe there (its default is a few steps, as the tests run it)
demo: venv
	mkdir -p $(DEMO_DIR)
	set -e; for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  case $$nb in *03_train*) steps="-p MAX_STEPS None";; *) steps="";; esac; \
	  $(PY) -m papermill --cwd notebooks --log-output --no-progress-bar \
	    "$$nb" "$(DEMO_DIR)/$$(basename $$nb)" -p WORK_DIR "../$(DEMO_DIR)" $$steps; \
	done
	@echo "Executed notebooks and figures are in $(DEMO_DIR)/"

lint: venv
	$(VENV)/bin/ruff check vsm_kit widgets tests benchmarks
	$(VENV)/bin/ruff format --check vsm_kit widgets tests benchmarks

# Chromium for tests/browser: Debian's package (Playwright's own browser download is not available
# here). Where apt cannot install it, the browser tests are skipped and say why.
browser-deps:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "browser-deps: could not install chromium with apt; the browser tests will be skipped"

test: venv lint browser-deps
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider --durations=15

clean:
	rm -rf $(VENV) runs
