# Two commands do all set-up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: install system-deps demo test test-unit bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev,ocr,serve]"
	$(PY) -m pip install --quiet --no-deps rapidocr-onnxruntime==1.4.4
	touch $@

install: $(VENV)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/rewardlab demo

system-deps:
	scripts/system-deps.sh

test: install system-deps
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/unit tests/e2e

test-unit: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/unit

bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/geneval_base.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/sampler_throughput.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/sampler_overhead.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/reward_throughput.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/brisque_reference.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/reward_agreement.py --reward shapeclip
	HF_HUB_OFFLINE=1 $(PY) benchmarks/reward_agreement.py --reward preference

clean:
	rm -rf $(VENV) outputs .pytest_cache
