# One command per job; README.md explains them. CI runs `.ci/run`, which runs `make test`.
.PHONY: test lint unit bindings bench-build bench run

test: lint unit bindings bench-build

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -q -- -D warnings

unit:
	cargo test --workspace -q

# The C ABI from real C/C++ compilers under ASan/UBSan, then the Python (cffi) and Node (koffi)
# packages' suites, all against the debug cdylib. It is built with the test targets selected, so
# dependencies get the same features as in `cargo test --workspace` and nothing is compiled twice
# (a plain `cargo build -p herald-ffi` recompiled the tree for 3 minutes in CI).
LIBHERALD := $(CURDIR)/target/debug/libherald.so
bindings:
	cargo build --workspace --lib --tests -q
	bash tests/c/run.sh
	HERALD_LIBRARY=$(LIBHERALD) python3 -m pytest -q bindings/python/tests
	cd bindings/node && npm ci --silent --no-audit --no-fund && HERALD_LIBRARY=$(LIBHERALD) npm test --silent

bench-build:
	cargo bench --workspace --no-run -q

bench:
	cargo bench -p herald-core --bench store

run:
	cargo run --release -- serve
