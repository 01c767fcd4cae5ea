# pgshift: the two commands are `make demo` and `make test` (README).
SHELL := /bin/bash
PG_BIN ?= /usr/lib/postgresql/15/bin
CARGO ?= cargo
# The shared crate's optional parts are built and tested even before a tool enables them.
FEATURES ?= --features shared/pg,shared/progress
export PG_BIN

.PHONY: all setup build release test test-criu lint bench demo clean

all: build

## setup: install what a fresh Debian machine lacks (idempotent; no-op when present)
setup:
	scripts/setup-machine.sh

## build: debug build of every crate, tests included
build:
	$(CARGO) build --workspace --all-targets $(FEATURES)

## release: optimised binaries in target/release (demo, benchmarks)
release:
	$(CARGO) build --workspace --release --bins

## test: the whole suite against real PostgreSQL clusters it starts itself
test: build
	@scripts/grant-test-access.sh
	@if command -v cargo-nextest >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace $(FEATURES); \
	else \
		echo "cargo-nextest not found; using cargo test" >&2; \
		$(CARGO) test --workspace $(FEATURES); \
	fi

## test-criu: real CRIU in a VM (Debian's 6.1 kernel under qemu) driven by criu-wrap; make test
## runs it too when qemu is installed (tools/criu-wrap/tests/vm.rs)
test-criu:
	@if command -v cargo-nextest >/dev/null 2>&1; then \
		$(CARGO) nextest run -p criu-wrap --no-capture -E 'test(/exclusive_vm_/)'; \
	else \
		$(CARGO) test -p criu-wrap exclusive_vm_ -- --nocapture --test-threads 1; \
	fi

## lint: clippy with warnings as errors, rustfmt, shellcheck
lint:
	$(CARGO) clippy --workspace --all-targets $(FEATURES) -- -D warnings
	$(CARGO) fmt --all --check
	@if command -v shellcheck >/dev/null 2>&1; then \
		shellcheck -x -P scripts $$(ls scripts/*.sh bench/*.sh 2>/dev/null) .ci/run; \
		shellcheck -s sh tools/pg-switch/src/remote/*.sh scripts/remote/*.sh; \
	else echo "shellcheck not installed; skipped (make setup installs it)" >&2; fi

## bench: every benchmark under bench/, peers measured in the same run
bench: release
	scripts/setup-machine.sh --bench
	@set -e; found=0; for b in bench/*.sh; do [ -e "$$b" ] || continue; found=1; \
		echo "== $$b" >&2; bash "$$b"; done; \
		[ $$found = 1 ] || echo "no benchmarks yet" >&2

## demo: two local hosts and the main job end to end
demo: setup release
	PGSHIFT_BIN=$(CURDIR)/target/release scripts/demo.sh

clean:
	$(CARGO) clean
