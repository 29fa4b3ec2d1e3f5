# Two commands on a fresh machine (Python 3.10-3.12, the package index reachable):
#   make demo   installs everything, then generate -> extract -> train -> evaluate -> predict
#   make test   installs everything, then runs the test suite
#   make docs-check   every figure in the README's tables traceable to the command that measured it
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install demo test docs-check
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh demo

test: install
	$(VENV)/bin/python -m pytest

docs-check: install
	$(VENV)/bin/python -m pytest tests/test_docs.py
