# Two entry points for a fresh machine with Python 3.11, 3.12 or 3.13:
#   make train   set up .venv (pinned) and train with the defaults
#   make test    set up .venv (with the MPI extra) and run the test suite
#   make mpi     add MPI (MPICH and mpi4py wheels) for --communicator
# Extra arguments: make train ARGS='--gpu=0'   make test PYTEST_ARGS='-x'

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MPI_STAMP := $(VENV)/.installed-mpi

# Chainer's setup.py and `import chainer` need pkg_resources (setuptools
# < 81); on Python 3.11, numpy.distutils (imported by chainer) needs
# distutils.msvccompiler, gone in setuptools 74. pip's isolated build would
# fetch a newer setuptools, hence --no-build-isolation after installing this
# one. chainer_compat.py supplies what NumPy 2 and Python 3.12+ removed.
BUILD_PINS := setuptools==73.0.1 wheel==0.45.1

.PHONY: setup train test gpu mpi clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else "$(PYTHON) is Python %d.%d; this project needs Python 3.11, 3.12 or 3.13 (the pinned wheels): make PYTHON=python3.12 ..." % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(BUILD_PINS)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		--no-build-isolation -r requirements.txt -r requirements-test.txt
	touch $@

train: $(STAMP)
	$(PY) train_mnist.py $(ARGS)

# the tests run real 2-process trainings under mpiexec
test: $(STAMP) $(MPI_STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

gpu: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		-r requirements-gpu.txt

mpi: $(MPI_STAMP)

$(MPI_STAMP): $(STAMP) requirements-mpi.txt
	$(PY) -m pip install --quiet --disable-pip-version-check \
		-r requirements-mpi.txt
	touch $@

clean:
	rm -rf $(VENV) result
