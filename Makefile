# Two commands set up everything on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A stamp per install set: re-install only when pyproject.toml changes.
STAMP_DEV := $(VENV)/.stamp-dev
STAMP_TEST := $(VENV)/.stamp-test
# protoc 31.1 (inside grpcio-tools 1.75.1) emits gencode 6.31.1, the oldest protobuf
# runtime we support (TensorFlow 2.21 needs the same floor), and newer runtimes accept it.
GRPCIO_TOOLS := grpcio-tools==1.75.1
# PyTorch is installed first, on its own: alone, pip takes the CPU wheel of the pin (the
# machine's find-links has it; its local version `+cpu` sorts above PyPI's), and later
# installs keep it. Resolved together with the test extra, pip has picked PyPI's CUDA
# build instead (triton + 3 GB of nvidia wheels), whose triton import segfaulted here.
TORCH := torch==2.13.0

.PHONY: demo test lint typecheck pytest protos bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -e '.[torch]'
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_DEV)

demo: $(STAMP_DEV)
	$(PY) examples/demo.py

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP_TEST)
	$(VENV)/bin/mypy

pytest: $(STAMP_TEST)
	$(VENV)/bin/pytest

test: lint typecheck pytest

protos: | $(PY)
	$(PYTHON) -m venv .venv-protos
	.venv-protos/bin/pip install --quiet '$(GRPCIO_TOOLS)'
	.venv-protos/bin/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src \
	    src/trackpoint/format/protos/*.proto

bench: $(STAMP_TEST)
	$(PY) benchmarks/crc32c_candidates.py

clean:
	rm -rf $(VENV) .venv-protos .mypy_cache .ruff_cache .pytest_cache
