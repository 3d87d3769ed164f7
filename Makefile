# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv with pinned dependencies on first use.
.PHONY: demo test lint check-deploy check-container chromium bootstrap bench node-tools

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	.venv/bin/amid demo

test: bootstrap node-tools chromium lint check-deploy check-container
	.venv/bin/python -m pytest

lint: bootstrap
	.venv/bin/ruff check amid tests bench
	.venv/bin/ruff format --check amid tests bench
	.venv/bin/mypy

# The node packages the tests run (tests/node: the Adaptive Cards validator), as locked.
node-tools:
	@scripts/node-tools

# systemd-analyze, hadolint, cfn-lint, promtool and checkov over deploy/ (installs what is missing).
check-deploy: bootstrap
	scripts/check-deploy

# Debian's chromium for the status page's browser tests (installs it when missing).
chromium:
	scripts/ensure-chromium

# Builds the Dockerfile with podman and runs the image against moto (installs what is missing).
check-container: bootstrap
	scripts/check-container

bench: bootstrap
	.venv/bin/python -m bench
