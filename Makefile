# kvblockd quick start:  make run   |   make test
PRESET ?= release
JOBS ?= $(shell nproc)

.PHONY: all deps build test test-asan run replay format-check clean

all: build

deps:
	@scripts/install-deps.sh --check 2>/dev/null || scripts/install-deps.sh

build: deps
	@cmake --preset $(PRESET) >/dev/null
	cmake --build --preset $(PRESET) -j $(JOBS)

test: build
	ctest --preset $(PRESET) -j $(JOBS)

test-asan:
	$(MAKE) test PRESET=asan

# Starts kvblockd on its defaults (temp socket), drives engine_sim, a mixed
# load and a trace replay through it, prints a results table, stops it.
run: build
	scripts/run-daemon-demo.sh build/$(PRESET)

# Hit-ratio table of the shared trace through the block manager alone.
replay: build
	scripts/replay-table.sh build/$(PRESET)

format-check:
	scripts/check-format.sh $(BASE)

clean:
	rm -rf build
