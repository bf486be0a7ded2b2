# One command per job; README.md explains them. CI runs `.ci/run`, which runs `make test`.
.PHONY: test lint unit bench-build bench run

test: lint unit bench-build

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -q -- -D warnings

unit:
	cargo test --workspace -q

bench-build:
	cargo bench --workspace --no-run -q

bench:
	cargo bench -p herald-core --bench store

run:
	cargo run --release -- serve
