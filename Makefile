# reseg: two commands to start with (README):  make demo  |  make test
# Everything installs into .venv with plain pip (torch/torchvision from the machine's wheel store).
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
DATA    ?= data/synthref
CONFIG  ?= configs/lisa/lisa_tiny-sam128_synthref.py
NAME    := $(basename $(notdir $(CONFIG)))
WORK    ?= work_dirs/$(NAME)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: venv data pretrain pretrain-demo pools demo test test-slow test-mmdet lint lock clean-demo

# setup.cfg declares the version ranges reseg works with; LOCK pins the exact set the tests ran with, so the
# two commands install the same versions everywhere (`make lock` rewrites it from the venv).
LOCK    ?= constraints.txt
PIP     := $(VPY) -m pip install -q -c $(LOCK)

$(VENV)/.installed: setup.cfg pyproject.toml $(LOCK)
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(PIP) "setuptools<82" wheel
	$(PIP) -e .
	touch $@

# The test extra (pytest, deepspeed for the strategy configs) only for `make test`: the demo skips it.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test]"
	touch $@

# ruff alone (its version from LOCK, its rules in pyproject.toml): linting needs nothing else installed.
$(VENV)/.installed-lint: $(LOCK)
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(PIP) ruff
	touch $@

lint: $(VENV)/.installed-lint
	$(VENV)/bin/ruff check .

# After upgrading a package on purpose in a fresh venv (and running make test there): write its versions
# into LOCK.
lock: $(VENV)/.installed-test $(VENV)/.installed-lint
	{ grep '^#' $(LOCK); $(VPY) -m pip freeze --all --exclude-editable --exclude pip | grep -v '^#'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

venv: $(VENV)/.installed

$(DATA)/synthref_meta.json: | venv
	$(VPY) tools/make_synthref.py --out $(DATA) --seed 0

data: $(DATA)/synthref_meta.json

pretrain: data
	$(VPY) tools/research/pretrain_tiny.py --data $(DATA) --out data/tiny_models

# Candidate pools for the pool-based method (RAS) on the splits that ship none (RES, GRES): the tiny SAM's
# automatic masks, computed once per image (tools/make_pools.py; docs/proposers.md). ~0.5 s an image.
POOLS   := $(DATA)/pools
AMG     := configs/_base_/proposers/sam_tiny_amg.py
$(POOLS)/synthref_%.jsonl: | pretrain
	$(VPY) tools/make_pools.py $(AMG) --dataset-config configs/ras/ras_tiny_synthref-res.py --split $* --out $@
$(POOLS)/grefcoco_%.jsonl: | pretrain
	$(VPY) tools/make_pools.py $(AMG) --dataset-config configs/ras/ras_tiny_synthref-gres.py --split $* --out $@
pools: $(POOLS)/synthref_train.jsonl $(POOLS)/synthref_val.jsonl $(POOLS)/grefcoco_train.jsonl $(POOLS)/grefcoco_val.jsonl

# The tiny parts every tiny config loads from data/tiny_models: the pre-trained vision tower and the
# point-pre-trained 256 px SAM (DEMO_PARTS: what `make pretrain` writes; the base tiny configs, READ,
# AnchorSeg and `make pools` use this SAM), and the demo config's SAM at 128 px pre-trained with point, box
# and attribute prompts (DEMO_SAM; configs/lisa/lisa_tiny-sam128_synthref.py says why). So every tiny config
# runs straight after `make demo`. `make demo CONFIG=configs/lisa/lisa_tiny_synthref.py DEMO_SAM=` skips the
# 128 px SAM. Existing files are kept.
DEMO_PARTS ?= vision,sam
DEMO_SAM   ?= data/tiny_models/sam128_attr/sam_tiny.pth
$(DEMO_SAM): | data
	$(VPY) tools/research/pretrain_tiny.py --data $(DATA) --config configs/lisa/lisa_tiny-rsam128_synthref.py --parts sam \
		--steps 600 --sam-aux-weight 2.0 --sam-attr-prompts --out $(patsubst %/,%,$(dir $(DEMO_SAM)))
pretrain-demo: data $(DEMO_SAM)
	$(VPY) tools/research/pretrain_tiny.py --data $(DATA) --out data/tiny_models --parts $(DEMO_PARTS)

# Train tiny LISA on CPU, evaluate on the validation splits, write metrics.json and overlays.
# Re-running continues (--resume) instead of overwriting the run.
demo: pretrain-demo
	$(VPY) tools/train.py $(CONFIG) --work-dir $(WORK) --resume
	$(VPY) tools/test.py $(CONFIG) "$$(cat $(WORK)/last_checkpoint)" --work-dir $(WORK) --baselines \
		--out-metrics $(WORK)/metrics.json --show-dir $(WORK)/vis

test: $(VENV)/.installed-test
	$(VPY) -m pytest -q

test-slow: $(VENV)/.installed-test
	$(VPY) -m pytest -q -m slow

# Detector proposals: builds/caches the mmcv 2.1.0 wheel and installs the mmdet extra once, then runs
# the tests marked `mmdet` (a random-weight Mask R-CNN through MMDetProposer).
test-mmdet: $(VENV)/.installed-test
	$(VPY) -c "import mmdet.apis" 2>/dev/null || PYTHON=$(VPY) bash tools/install_mmdet.sh
	$(VPY) -m pytest -q -m mmdet

clean-demo:
	rm -rf $(WORK)
