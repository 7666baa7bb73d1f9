# Two commands are all a user needs: `make demo` and `make test`.
# Each creates .venv when absent and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# the editable install leaves holodask's bytecode to be compiled at every start
# where PYTHONDONTWRITEBYTECODE is set; compile it once here
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q holodask

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,cluster]'
	$(BIN)/python -m compileall -q holodask

demo: install
	$(BIN)/holodask demo

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info holodask-demo
