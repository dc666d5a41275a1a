# Two entry points for a fresh machine (README): `make demo` and `make test`.
# Both create .venv once and reuse it; it is rebuilt when pyproject.toml or the pins change.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test slow-tests bench clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/invae demo

test: $(STAMP)
	@bash scripts/install-browser.sh
	$(VENV)/bin/python -m pytest

slow-tests: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow

clean:
	rm -rf $(VENV) invae-demo
