# Thin wrappers over scripts/; the scripts are the source of truth.
.PHONY: setup check test serve bench fmt lock upgrade

setup:
	scripts/setup

check test:
	scripts/test $(ARGS)

serve:
	scripts/serve $(ARGS)

bench:
	scripts/setup
	.venv/bin/python -m bench.web_chat $(ARGS)

fmt:
	scripts/setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

lock:
	scripts/lock

upgrade:
	scripts/upgrade-deps
