# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv with pinned dependencies on first use.
.PHONY: demo test lint bootstrap bench

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	.venv/bin/amid demo

test: bootstrap lint
	.venv/bin/python -m pytest

lint: bootstrap
	.venv/bin/ruff check amid tests bench
	.venv/bin/ruff format --check amid tests bench
	.venv/bin/mypy

bench: bootstrap
	.venv/bin/python -m bench
