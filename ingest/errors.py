"""Why a file was not ingested: one line a person can act on."""


class LoadError(Exception):
    """The file is of a supported type but cannot be read (the message says why)."""


class UnsupportedFile(Exception):
    """The file is not of a type we ingest; it is skipped."""
