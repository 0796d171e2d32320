# Two entry points for a fresh machine with Python 3.11, 3.12 or 3.13:
#   make train   set up .venv (pinned) and train with the defaults
#   make test    set up .venv (with the MPI extra) and run the test suite
#   make mpi     add MPI (MPICH and mpi4py wheels) for --communicator
#   make onnx    add onnx, onnxruntime and qonnx for export.py --format onnx
#   make c-toolchains   Debian's compilers and emulators that the tests of
#                export.py --format c run the C source with
#   make bench-peers  .venv-peer: PyTorch for the benchmarks' peers
#   make gpu     add CuPy 14 for the driver's CUDA 12 or 13 (CUDA=12|13)
#   make gpu-check   GPU tests, a --gpu=0 training against the CPU, speed
#   make wheels  download every pinned wheel into wheels/ for a machine
#                without network; there: make ... WHEELS=wheels
# Extra arguments: make train ARGS='--gpu=0'   make test PYTEST_ARGS='-x'

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# WHEELS=DIR: install from that folder alone (no network)
PIP := $(PY) -m pip install --quiet --disable-pip-version-check \
	$(if $(WHEELS),--no-index --find-links $(WHEELS))
MPI_STAMP := $(VENV)/.installed-mpi
ONNX_STAMP := $(VENV)/.installed-onnx
# qnn.pth in the environment: the repository on sys.path and a plain
# `import chainer` that works (qnn/backends/chainer_import_hook.py)
PTH_STAMP := $(VENV)/.installed-pth

# Chainer's setup.py and `import chainer` need pkg_resources (setuptools
# < 81); on Python 3.11, numpy.distutils (imported by chainer) needs
# distutils.msvccompiler, gone in setuptools 74. pip's isolated build would
# fetch a newer setuptools, hence --no-build-isolation after installing this
# one. chainer_compat.py supplies what NumPy 2 and Python 3.12+ removed.
BUILD_PINS := setuptools==73.0.1 wheel==0.45.1

.PHONY: setup train test gpu gpu-check wheels mpi onnx bench-peers clean

setup: $(STAMP) $(PTH_STAMP)

$(STAMP): requirements.txt requirements-test.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else "$(PYTHON) is Python %d.%d; this project needs Python 3.11, 3.12 or 3.13 (the pinned wheels): make PYTHON=python3.12 ..." % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(BUILD_PINS)
	$(PIP) --no-build-isolation -r requirements.txt -r requirements-test.txt
	touch $@

$(PTH_STAMP): $(STAMP) qnn/backends/chainer_import_hook.py
	$(PY) -c 'import os, sysconfig; open(os.path.join(sysconfig.get_paths()["purelib"], "qnn.pth"), "w").write(os.getcwd() + "\nimport importlib.util as u; u.find_spec(\"qnn\") and __import__(\"qnn.backends.chainer_import_hook\")\n")'
	touch $@

# a second `make train` replaces the run in result/ (train_mnist.py alone
# refuses a directory that holds another run's files)
train: setup
	$(PY) train_mnist.py --replace-out $(ARGS)

# the tests run real 2-process trainings under mpiexec, check the ONNX
# export with onnxruntime and qonnx, and the C export on four targets
test: setup $(MPI_STAMP) $(ONNX_STAMP) fashion-mnist c-toolchains
	$(PY) -m pytest tests $(PYTEST_ARGS)

# the CuPy wheel for the driver's CUDA (qnn/backends/gpu_requirements.py
# says which)
gpu: setup
	@$(PY) -m qnn.backends.gpu_requirements > $(VENV)/.gpu-requirements
	$(PIP) $$(cat $(VENV)/.gpu-requirements)

gpu-check: gpu
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

# for a machine without network (PYTHON_VERSION and CUDA of that machine)
PYTHON_VERSION ?= 3.12
wheels: $(STAMP)
	$(PY) -m pip download --quiet --disable-pip-version-check -d wheels \
		--no-deps --python-version $(PYTHON_VERSION) \
		--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
		--platform manylinux_2_17_x86_64 --platform any \
		$(BUILD_PINS) -r requirements.txt -r requirements-test.txt \
		-r requirements-onnx.txt \
		$$(CUDA=$${CUDA:-13} $(PY) -m qnn.backends.gpu_requirements)

mpi: $(MPI_STAMP)

$(MPI_STAMP): $(STAMP) requirements-mpi.txt
	$(PIP) -r requirements-mpi.txt
	touch $@

onnx: $(ONNX_STAMP)

$(ONNX_STAMP): $(STAMP) requirements-onnx.txt
	$(PIP) -r requirements-onnx.txt
	touch $@

# the PyTorch peers of bench/speed.py (bench/peers/torch_*.py) in an
# environment of their own: torch is never a dependency of the project
PEER_VENV := .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed

bench-peers: $(PEER_STAMP)

$(PEER_STAMP): requirements-bench.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		$(if $(WHEELS),--no-index --find-links $(WHEELS)) -r requirements-bench.txt
	touch $@

clean:
	rm -rf $(VENV) $(PEER_VENV) result

# Fashion-MNIST (--dataset fashion-mnist and its tests) from Debian's package
# dataset-fashion-mnist, installed with apt-get as root or through sudo when
# the files are missing. Without apt-get, or if the install fails, one line
# says so and the Fashion-MNIST tests skip (they fail instead with
# QNN_REQUIRE_FASHION_MNIST=1).
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
FASHION_MNIST_FILES := $(foreach f,train-images-idx3-ubyte \
	train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte,\
	$(FASHION_MNIST_DIR)/$(f).gz)

.PHONY: fashion-mnist
fashion-mnist:
	@if ls $(FASHION_MNIST_FILES) >/dev/null 2>&1; then \
		echo "fashion-mnist: present in $(FASHION_MNIST_DIR)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "fashion-mnist: no apt-get here; put the four Fashion-MNIST IDX files in a directory and pass --data-dir DIR (its tests will skip)"; \
	else \
		apt='env DEBIAN_FRONTEND=noninteractive apt-get'; \
		[ "$$(id -u)" = 0 ] || apt="sudo -n $$apt"; \
		$$apt install -y dataset-fashion-mnist || \
		{ $$apt update && $$apt install -y dataset-fashion-mnist; } || \
		echo "fashion-mnist: apt-get install dataset-fashion-mnist failed (see above); the Fashion-MNIST tests will skip"; \
	fi

# The toolchains that tests/test_c_targets.py builds and runs the C source of
# export.py --format c with, from Debian's packages (apt-get as root or
# through sudo, when a tool is missing): gcc and clang for x86-64; clang and
# lld for WebAssembly, run by node; the AArch64 cross compiler (static
# glibc) and qemu-user; arm-none-eabi-gcc with newlib and qemu-system-arm
# for a Cortex-M4. Without apt-get, or if the install fails, one line says
# so and those tests skip (they fail instead when CI is true).
C_TOOLS := gcc clang wasm-ld node aarch64-linux-gnu-gcc \
	aarch64-linux-gnu-objdump qemu-aarch64 arm-none-eabi-gcc \
	arm-none-eabi-objdump arm-none-eabi-size qemu-system-arm
C_PACKAGES := gcc clang lld nodejs gcc-aarch64-linux-gnu \
	libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user \
	gcc-arm-none-eabi binutils-arm-none-eabi libnewlib-arm-none-eabi \
	qemu-system-arm
NEWLIB_SPECS := /usr/lib/arm-none-eabi/newlib/nano.specs
AARCH64_LIBC := /usr/aarch64-linux-gnu/lib/libc.a

.PHONY: c-toolchains
c-toolchains:
	@missing=; for tool in $(C_TOOLS); do \
		command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	for file in $(NEWLIB_SPECS) $(AARCH64_LIBC); do \
		[ -e $$file ] || missing="$$missing $$file"; \
	done; \
	if [ -z "$$missing" ]; then \
		echo "c-toolchains: present"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "c-toolchains: no apt-get here; install$$missing (Debian: $(C_PACKAGES)); the C targets' tests will skip"; \
	else \
		apt='env DEBIAN_FRONTEND=noninteractive apt-get'; \
		[ "$$(id -u)" = 0 ] || apt="sudo -n $$apt"; \
		$$apt install -y --no-install-recommends $(C_PACKAGES) || \
		{ $$apt update && $$apt install -y --no-install-recommends $(C_PACKAGES); } || \
		echo "c-toolchains: apt-get install failed (see above); the C targets' tests will skip"; \
	fi
