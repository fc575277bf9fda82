# molsym: `make demo` and `make test` bootstrap .venv on a machine with only Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# CPU torch first, so that resolving the package never pulls a CUDA build
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 $(PY) -m pytest -q

test-slow: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 $(PY) -m pytest -q -m slow

bench: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 $(PY) benchmarks/bench_tensornet.py

clean:
	rm -rf $(VENV) build *.egg-info
