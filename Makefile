# Two entry points: `make test` and `make demo`. Both create .venv at the repo
# root and install the package from constraints.txt, so every machine gets the
# versions CI got.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test test-keras3 test-legacy demo demo-seg bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt pip setuptools
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The two Keras lines run side by side (one per core); each prints its own
# pytest summary when it is done.
test: $(STAMP)
	$(MAKE) -j2 --output-sync=target test-keras3 test-legacy

test-keras3: $(STAMP)
	TF_USE_LEGACY_KERAS=0 $(PY) -m pytest -q -p no:cacheprovider tests

test-legacy: $(STAMP)
	TF_USE_LEGACY_KERAS=1 $(PY) -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(PY) -m keras_mbv3 recipe --data digits --model small --out runs/demo

# LR-ASPP segmentation on the embedded digits-seg (about 5 minutes more).
demo-seg: $(STAMP)
	$(PY) -m keras_mbv3 recipe --task segmentation --data digits-seg --model small --image-size 64 --epochs 24 --qat-epochs 2 --out runs/demo-seg

bench: $(STAMP)
	$(PY) benchmarks/float_parity.py

clean:
	rm -rf $(VENV) build *.egg-info
