# Two entry points: `make test` and `make demo`. They create .venv at the repo
# root (Keras 3, the default line) and, for the tests of the tf_keras line,
# .venv-tfmot (tf_keras and tfmot, whose pins cannot share an environment with
# current packages), each from its own constraints file, so that every machine
# gets the versions CI got.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAMP_TORCH := $(VENV)/.installed-torch
VENV_TFMOT := .venv-tfmot
PY_TFMOT := $(VENV_TFMOT)/bin/python
STAMP_TFMOT := $(VENV_TFMOT)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test check test-keras3 test-legacy test-jax test-keras3-rest test-keras3-runs test-legacy-rest \
	test-legacy-runs test-jax-runs test-jax-rest test-torch demo demo-seg demo-det bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt pip setuptools
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -e '.[test,mediapipe,compare,jax]'
	touch $(STAMP)

# PyTorch for its line of the tests only (not for make demo): constraints.txt pins the CPU build
# (torch==2.13.0+cpu, 192 MB), which pip finds where the machine keeps it or on PyTorch's own index
# (PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu); PyPI's torch is a CUDA build of several GB.
$(STAMP_TORCH): $(STAMP) constraints.txt
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -e '.[torch]'
	touch $(STAMP_TORCH)

$(STAMP_TFMOT): setup.cfg pyproject.toml constraints-tfmot.txt
	$(PYTHON) -m venv $(VENV_TFMOT)
	$(PY_TFMOT) -m pip install -q -c constraints-tfmot.txt pip setuptools
	PIP_CONSTRAINT=$(CURDIR)/constraints-tfmot.txt $(PY_TFMOT) -m pip install -q -e '.[test,tfmot]'
	touch $(STAMP_TFMOT)

# Four lines: Keras 3 and tf_keras (every test), and Keras 3 on the JAX and PyTorch backends
# (tests/backends, written for them, the detection library, the optimizer and host memory; the layers on
# PyTorch). The long lines run as two pytest processes each, their end-to-end runs (the CLI,
# the README, the adapt CLI) apart from the rest, so that the seven share the two cores
# evenly: make starts them in the order below, the longest first, each on the core that
# frees first. Each prints its own pytest summary when it is done.
RUNS := tests/test_cli.py tests/test_readme.py tests/adapt/test_adapt_cli.py
JAX_RUNS := tests/backends/test_jax_cli.py
NEUTRAL := tests/backends tests/detection tests/test_optimizers.py tests/test_host_memory.py
PYTEST := -m pytest -q -p no:cacheprovider --durations=10
# One TensorFlow intra-op thread per pytest process: two processes share the two cores, and a second thread each
# only contends for them. tests/quantization/test_qat.py on both lines side by side took 249 s of process time with
# one, 270-279 s with TensorFlow's default (user CPU 237 s against 254-261 s). Clean-clone rehearsals, the four
# Keras lines summed: 2,282 s with it on every line (e86cce0), 2,463 s with it on the rest lines only (9fa19a4),
# 2,325 and 2,417 s without it (b6c7a60, 5c4cbd7). PyTorch's line also takes one OpenMP thread: 180 and 144 s in
# those two rehearsals, 198 s in b6c7a60's without either setting.
ONE_THREAD := TF_NUM_INTRAOP_THREADS=1
KERAS3 := $(ONE_THREAD) TF_USE_LEGACY_KERAS=0 $(PY) $(PYTEST)
LEGACY := $(ONE_THREAD) TF_USE_LEGACY_KERAS=1 $(PY_TFMOT) $(PYTEST)
JAX := $(ONE_THREAD) KERAS_BACKEND=jax TF_USE_LEGACY_KERAS=0 $(PY) $(PYTEST)
TORCH := $(ONE_THREAD) OMP_NUM_THREADS=1 KERAS_BACKEND=torch TF_USE_LEGACY_KERAS=0 $(PY) $(PYTEST)

# A pytest process that dies in a native library (an abort, exit status 128 + the signal) prints no summary: the test
# it was in is named (tests/conftest.py writes each test's id into .last-test-TARGET as it starts). Failed tests
# (status 1) are in pytest's own summary; the last test started is then not the one that failed.
named = MBV3_LAST_TEST=.last-test-$@ $(1) || { status=$$?; [ $$status -lt 128 ] || echo "$@: exit $$status in \
	$$(cat .last-test-$@)"; rm -f .last-test-$@; exit $$status; }; rm -f .last-test-$@

test: $(STAMP) $(STAMP_TFMOT) $(STAMP_TORCH)
	$(MAKE) -j2 --output-sync=target test-legacy-rest test-keras3-rest test-keras3-runs test-legacy-runs \
		test-jax-runs test-jax-rest test-torch

test-keras3: test-keras3-rest test-keras3-runs
test-legacy: test-legacy-rest test-legacy-runs
test-jax: test-jax-runs test-jax-rest

# The edit-test loop: the Keras 3 line's tests not marked slow (in-process, small inputs; about 3 minutes).
check: $(STAMP)
	TF_USE_LEGACY_KERAS=0 $(PY) -m pytest -q -p no:cacheprovider -m "not slow" --durations=5 tests

test-keras3-rest: $(STAMP)
	$(call named,$(KERAS3) tests $(addprefix --ignore=,$(RUNS)))

test-keras3-runs: $(STAMP)
	$(call named,$(KERAS3) $(RUNS))

test-legacy-rest: $(STAMP_TFMOT)
	$(call named,$(LEGACY) tests $(addprefix --ignore=,$(RUNS)))

test-legacy-runs: $(STAMP_TFMOT)
	$(call named,$(LEGACY) $(RUNS))

test-jax-runs: $(STAMP)
	$(call named,$(JAX) $(JAX_RUNS))

test-jax-rest: $(STAMP)
	$(call named,$(JAX) $(NEUTRAL) $(addprefix --ignore=,$(JAX_RUNS)))

test-torch: $(STAMP_TORCH)
	$(call named,$(TORCH) $(NEUTRAL) tests/layers)

demo: $(STAMP)
	$(PY) -m keras_mbv3 recipe --data digits --model small --out runs/demo

# LR-ASPP segmentation on the embedded digits-seg (about 3 minutes more).
demo-seg: $(STAMP)
	$(PY) -m keras_mbv3 recipe --task segmentation --data digits-seg --model small --image-size 64 --epochs 24 --qat-epochs 2 --out runs/demo-seg

# SSDLite detection on the embedded digits-det (96 px; about 13 minutes more on 2 cores).
demo-det: $(STAMP)
	$(PY) -m keras_mbv3 recipe --task detection --data digits-det --model small --epochs 40 --qat-epochs 2 --out runs/demo-det

bench: $(STAMP)
	$(PY) benchmarks/float_parity.py

clean:
	rm -rf $(VENV) $(VENV_TFMOT) build *.egg-info
