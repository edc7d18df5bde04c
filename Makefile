# Two commands a user needs: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch to install before the project. CPU-only machines get the CPU wheel (a bare `torch`
# requirement downloads a multi-GB CUDA build). GPU users: `make TORCH_SPEC="torch==2.6.0" test`
# or install torch into .venv yourself first; an existing torch is never replaced.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_CUDA),torch,torch==2.13.0)
STAMP := $(VENV)/.installed
# Two workers: most of the suite waits on sandboxed kernels, so two overlap well even on 2 cores; each test
# file stays on one worker (its module-scoped kernels start once). `make test PYTEST_ARGS=` runs serially.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup test test-docker lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,bench]"
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q bubblewrap || { apt-get update -q && apt-get install -y -q bubblewrap; }; } >/dev/null 2>&1; } || echo "warning: bubblewrap is missing, so the sandbox will refuse to start: sudo apt-get install -y bubblewrap"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1; } || echo "note: chromium is missing, so the HTML-report rendering test is skipped: sudo apt-get install -y chromium"
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tools sandbox evals tests benchmarks
	$(VENV)/bin/lint-imports --no-cache  # the import contracts in .importlinter (one-way packages, agent layers, no cycles)

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# The docker backend against a real engine (README "Sandbox"): DOCKER_HOST or the default socket, else (as root)
# a private dockerd it starts and stops; builds the base and sandbox images (cached by content hash), then runs
# the docker contract tests, the attack suite and the toy-IOI investigation on both backends.
test-docker: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m tests.docker_harness $(if $(DOCKER_PYTEST_ARGS),-- $(DOCKER_PYTEST_ARGS))

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/interp-agent demo

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/tools_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
