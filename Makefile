# kvblockd quick start:  make run   |   make test
PRESET ?= release
JOBS ?= $(shell nproc)

.PHONY: all deps build test test-asan test-tsan test-python python test-vllm run replay lint fuzz format-check clean

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
	scripts/check-coawait.sh
	scripts/lint.sh build/$(PRESET) $(JOBS)

# libFuzzer over the protocol decoders (tests/fuzz/README.md): FUZZ_RUNS
# executions (default 1,000,000) from the committed corpus; not run by CI,
# which replays the corpus in `make test`.
FUZZ_RUNS ?= 1000000
fuzz: deps
	@cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS) --target kvb_fuzz_protocol
	scripts/fuzz.sh build/fuzz $(FUZZ_RUNS)

# ThreadSanitizer (the tsan preset) over the tests where threads and
# processes meet: tests/daemon (units, integration, disk, cluster, the
# Hostile* suite and Chaos), tests/kernels (copy engines) and tests/transport.
# Builds only their binaries and the ones they spawn. Every report, from a
# test or from a kvblockd / engine_sim / peer it started, is written to
# TSAN_REPORTS/tsan.<pid>, printed, and fails the target; tests/tsan.supp
# holds only races inside uninstrumented third-party libraries.
# UCX_MEM_EVENTS=no: UCX's memory hooks patch glibc's mmap/madvise; glibc
# calls madvise after TSan has retired an exiting thread, and the hook's
# rwlock (intercepted by TSan) then segfaults every test that ends a thread.
TSAN_TARGETS = kvblockd kvblockctl engine_sim transport_test_peer test_daemon_units test_daemon_integration \
  test_daemon_hostile test_daemon_disk test_cluster_integration test_cluster_faults test_kernels_host \
  test_transport_unit test_transport_integration
TSAN_REPORTS = build/tsan/tsan-reports
test-tsan: deps
	@cmake --preset tsan >/dev/null
	cmake --build --preset tsan -j $(JOBS) --target $(TSAN_TARGETS)
	@rm -rf $(TSAN_REPORTS) && mkdir -p $(TSAN_REPORTS)
	@export UCX_MEM_EVENTS=no TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp \
	    log_path=$(CURDIR)/$(TSAN_REPORTS)/tsan"; rc=0; \
	  for dir in daemon kernels transport; do \
	    ctest --test-dir build/tsan/tests/$$dir --output-on-failure -j $(JOBS) || rc=1; \
	  done; \
	  for report in $(TSAN_REPORTS)/tsan.*; do \
	    [ -e "$$report" ] || continue; echo "== ThreadSanitizer report $$report"; cat "$$report"; rc=1; \
	  done; \
	  exit $$rc

# clang-format of every C++ file (or of those changed since BASE).
format-check:
	scripts/check-format.sh $(BASE)

clean:
	rm -rf build
