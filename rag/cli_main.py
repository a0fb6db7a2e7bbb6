"""`python -m rag.cli_main ...` is the `rag` command (for environments without the script)."""

from rag.cli import main

if __name__ == "__main__":
    main()
