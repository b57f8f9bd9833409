# kvblockd quick start:  make run   |   make test
PRESET ?= release
JOBS ?= $(shell nproc)

.PHONY: all deps build test test-asan test-python python test-vllm run replay lint fuzz format-check clean

all: build

deps:
	@scripts/install-deps.sh --check 2>/dev/null || scripts/install-deps.sh

build: deps
	@cmake --preset $(PRESET) >/dev/null
	cmake --build --preset $(PRESET) -j $(JOBS)

test: build
	ctest --preset $(PRESET) -j $(JOBS)
	$(MAKE) test-python

# The Python package (python/, docs/python.md) built into a cached venv.
PY_VENV ?= build/py-venv
python: deps
	JOBS=$(JOBS) python/install-dev.sh $(PY_VENV)

# Its unit tests, against the kvblockd of this build.
test-python: build python
	KVBLOCKD_BIN=build/$(PRESET)/daemon/kvblockd $(PY_VENV)/bin/pytest -q python/tests

# vLLM end to end (docs/python.md): a real vLLM CPU engine with the connector.
# Installs vLLM + torch into build/vllm-venv once (several GB).
VLLM_VENV ?= build/vllm-venv
test-vllm: build
	python/e2e/make-venv.sh $(VLLM_VENV)
	JOBS=$(JOBS) python/install-dev.sh --into $(VLLM_VENV)
	KVBLOCKD_BIN=build/$(PRESET)/daemon/kvblockd KVB_E2E_MODEL=$(CURDIR)/build/e2e-model/opt2 \
	  $(VLLM_VENV)/bin/pytest -q -s python/e2e

# Starts kvblockd on its defaults (temp socket), drives engine_sim, a mixed
# load and a trace replay through it, prints a results table, stops it.
run: build
	scripts/run-daemon-demo.sh build/$(PRESET)

# Hit-ratio table of the shared trace through the block manager alone.
replay: build
	scripts/replay-table.sh build/$(PRESET)

# clang-tidy over every C++ source (findings are errors); a CI step (.ci/run).
lint: build
	scripts/lint.sh build/$(PRESET) $(JOBS)

# libFuzzer over the protocol decoders (tests/fuzz/README.md): FUZZ_RUNS
# executions (default 1,000,000) from the committed corpus; not run by CI,
# which replays the corpus in `make test`.
FUZZ_RUNS ?= 1000000
fuzz: deps
	@cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS) --target kvb_fuzz_protocol
	scripts/fuzz.sh build/fuzz $(FUZZ_RUNS)

# clang-format of every C++ file (or of those changed since BASE).
format-check:
	scripts/check-format.sh $(BASE)

clean:
	rm -rf build
