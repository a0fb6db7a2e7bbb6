# The two commands of the README. Both set everything up from nothing first.
.PHONY: demo test setup

# Set up, ingest the demo corpus, answer one question, then serve the web page.
demo:
	bash scripts/setup.sh
	.venv/bin/rag ingest corpora
	.venv/bin/rag ask "When was the Aurora observatory completed?"
	.venv/bin/rag serve

# Set up with the test tools and a browser, then run every test.
test:
	bash scripts/setup.sh --dev
	.venv/bin/python -m pytest -q -rs

setup:
	bash scripts/setup.sh
