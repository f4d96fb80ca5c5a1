# The two commands of the README: `make demo` and `make test`. Both create .venv when it is
# missing (Python 3.11) and install the package into it; nothing else is needed on the machine.
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo install clean check-python notebooks

$(STAMP): setup.py pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Two pytest workers: many tests wait on process start-up and tracing, which one core does.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --durations=15 tests

clean:
	rm -rf $(VENV) .venv-check *.egg-info

demo: $(STAMP)
	$(VENV)/bin/python -m simclr_tf.cli.demo --flagfile=flags/demo.flags --model_dir=demo_runs

# Run the notebooks in colabs/ and store them with their outputs (offline, a few minutes).
notebooks: $(STAMP)
	$(VENV)/bin/python colabs/refresh_outputs.py

# Another Python (e.g. `make check-python PY=python3.13`): a fresh venv of its own, the
# package installed into it, then the smoke commands of the README's quick start.
PY ?= python3.12
check-python:
	rm -rf .venv-check && $(PY) -m venv .venv-check
	.venv-check/bin/python -m pip install -q --upgrade pip
	.venv-check/bin/python -m pip install -q -e .
	rm -rf /tmp/simclr_check && .venv-check/bin/simclr-pretrain --flagfile=flags/smoke.flags \
	    --model_dir=/tmp/simclr_check/pre
	.venv-check/bin/simclr-finetune --flagfile=flags/smoke.flags --train_mode=finetune \
	    --linear_eval --checkpoint=/tmp/simclr_check/pre --model_dir=/tmp/simclr_check/lin
	.venv-check/bin/simclr-eval --model_dir=/tmp/simclr_check/lin
