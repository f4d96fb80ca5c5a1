# The two commands of the README: `make demo` and `make test`. Both create .venv when it is
# missing (Python 3.11) and install the package into it; nothing else is needed on the machine.
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo install clean

$(STAMP): setup.py pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) *.egg-info

demo: $(STAMP)
	$(VENV)/bin/python -m simclr_tf.demo --flagfile=flags/demo.flags --model_dir=demo_runs
