# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned: the CPU build of 2.13.0 is on local disk,
# while an unpinned torch (asked for by any dependency) would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,nudity,annotate,track
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-rl install clean toyworld

demo: $(STAMP)
	$(VENV)/bin/unsee demo --out out/demo

test: lint
	$(PY) -m pytest -q

# style and a complexity limit (mccabe 15, pyproject.toml), then the formatter's check
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs
	$(VENV)/bin/ruff format --check src tests benchmarks docs

bench: $(STAMP)
	$(PY) benchmarks/bench_generate.py

install: $(STAMP)

# DDPO against trl (benchmarks/bench_rl.py): trl==0.23.1, its last release with DDPO, in a venv of its own
# with the same torch, diffusers, transformers, peft and accelerate as $(VENV).
TRL_VENV ?= .venv-trl
bench-rl: $(STAMP) $(TRL_VENV)/.installed
	$(PY) benchmarks/bench_rl.py --trl-python $(TRL_VENV)/bin/python

$(TRL_VENV)/.installed: $(STAMP)
	$(PYTHON) -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/python -m pip install -q --upgrade pip
	$(TRL_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(TRL_VENV)/bin/python -m pip install -q trl==0.23.1 \
	  $$($(PY) -m pip freeze | grep -iE '^(diffusers|transformers|peft|accelerate)==')
	touch $@

# Rebuild the toy world from scratch (about 95 min on 2 cores, its check included) and ship it inside the package.
TW_BUILD ?= runs/toyworld
TW_ASSETS := src/unsee/toyworld/assets
toyworld: $(STAMP)
	$(VENV)/bin/unsee toyworld build --out $(TW_BUILD)
	rm -rf $(TW_ASSETS) && mkdir -p $(TW_ASSETS)
	cp -r $(TW_BUILD)/pipeline $(TW_BUILD)/clip $(TW_BUILD)/oracle $(TW_BUILD)/prompts \
	      $(TW_BUILD)/model_card.json $(TW_BUILD)/build_config.json $(TW_ASSETS)/

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml Makefile
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@# clean-fid's resize function is the reference the FID resize is tested against; its own dependencies
	@# (torchvision among them) would pull another torch, and the resize needs none of them.
	$(PY) -m pip install -q --no-deps clean-fid==0.1.35
	@# Headless Chromium for the report and web-app tests: Debian's package (Playwright drives it;
	@# its own browser download cannot work offline).
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install Chromium (sudo apt-get install chromium) for the browser tests"; fi; }
	touch $(STAMP)

clean:
	rm -rf $(VENV) $(TRL_VENV) runs .pytest_cache
