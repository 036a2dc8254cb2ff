# reseg: two commands to start with (README):  make demo  |  make test
# Everything installs into .venv with plain pip (torch/torchvision from the machine's wheel store).
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
DATA    ?= data/synthref
CONFIG  ?= configs/lisa/lisa_tiny_synthref.py
NAME    := $(basename $(notdir $(CONFIG)))
WORK    ?= work_dirs/$(NAME)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: venv data pretrain demo test test-slow clean-demo

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q "setuptools<82" wheel
	$(VPY) -m pip install -q -e .
	touch $@

# The test extra (pytest, deepspeed for the strategy configs) only for `make test`: the demo skips it.
$(VENV)/.installed-test: $(VENV)/.installed
	$(VPY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

$(DATA)/synthref_meta.json: | venv
	$(VPY) tools/make_synthref.py --out $(DATA) --seed 0

data: $(DATA)/synthref_meta.json

pretrain: data
	$(VPY) tools/pretrain_tiny.py --data $(DATA) --out data/tiny_models

# Train tiny LISA on CPU, evaluate on the validation splits, write metrics.json and overlays.
# Re-running continues (--resume) instead of overwriting the run.
demo: pretrain
	$(VPY) tools/train.py $(CONFIG) --work-dir $(WORK) --resume
	$(VPY) tools/test.py $(CONFIG) "$$(cat $(WORK)/last_checkpoint)" --work-dir $(WORK) --baselines \
		--out-metrics $(WORK)/metrics.json --show-dir $(WORK)/vis

test: $(VENV)/.installed-test
	$(VPY) -m pytest -q

test-slow: $(VENV)/.installed-test
	$(VPY) -m pytest -q -m slow

clean-demo:
	rm -rf $(WORK)
