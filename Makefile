# One command per job; README.md explains them. CI runs `.ci/run`, which runs `make test`.
.PHONY: test lint unit bindings bench-build bench run

test: lint unit bindings bench-build

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -q -- -D warnings

unit:
	cargo test --workspace -q

# The C ABI from real C/C++ compilers under ASan/UBSan, then the Python (cffi) and Node (koffi)
# packages' suites, all against the debug cdylib.
LIBHERALD := $(CURDIR)/target/debug/libherald.so
bindings:
	cargo build -p herald-ffi -q
	bash tests/c/run.sh
	HERALD_LIBRARY=$(LIBHERALD) python3 -m pytest -q bindings/python/tests
	cd bindings/node && npm ci --silent --no-audit --no-fund && HERALD_LIBRARY=$(LIBHERALD) npm test --silent

bench-build:
	cargo bench --workspace --no-run -q

bench:
	cargo bench -p herald-core --bench store

run:
	cargo run --release -- serve
