# kvblockd quick start:  make run   |   make test
PRESET ?= release
JOBS ?= $(shell nproc)

.PHONY: all deps build test test-asan run format-check clean

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

run: build
	scripts/run-demo.sh build/$(PRESET)

format-check:
	scripts/check-format.sh $(BASE)

clean:
	rm -rf build
