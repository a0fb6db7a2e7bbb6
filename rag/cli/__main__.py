"""`python -m rag.cli ...` is the `rag` command (for environments without the script)."""

from rag.cli import main

main()
