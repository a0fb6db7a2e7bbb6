# The two commands of the README. Both set everything up from nothing first.
.PHONY: demo test setup lint lock

# Set up, ingest the demo corpus, answer one question, then serve the web page.
demo:
	bash scripts/setup.sh
	.venv/bin/rag ingest corpora
	.venv/bin/rag ask "When was the Aurora observatory completed?"
	.venv/bin/rag serve

# Set up with the test tools and a browser, lint, then run every test.
test:
	bash scripts/setup.sh --dev
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q -rs

setup:
	bash scripts/setup.sh

lint:
	bash scripts/setup.sh --dev
	.venv/bin/ruff check .

# Re-resolve every dependency (runtime and dev) in a throwaway venv into constraints.txt,
# the versions scripts/setup.sh installs. Run after changing dependencies in pyproject.toml.
lock:
	bash scripts/setup.sh --lock
