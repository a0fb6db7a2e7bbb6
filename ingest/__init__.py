"""Files -> documents -> chunks -> vectors -> store. The public API:

    import rag, ingest
    runtime = rag.open_runtime(rag.load_config({}))
    report = ingest.ingest_paths(["~/papers"], runtime)   # IngestReport, a FileResult per file
    result = ingest.ingest_file(path, runtime)            # one file (the web upload path)
"""

from rag.lazy import lazy_names

_API = {
    "ingest_paths": "ingest.pipeline", "ingest_file": "ingest.pipeline",
    "discover": "ingest.pipeline", "IngestReport": "ingest.pipeline",
    "FileResult": "ingest.pipeline", "file_sha256": "ingest.pipeline",
    "STATUSES": "ingest.pipeline",
    "load": "ingest.loaders", "sniff": "ingest.filetypes",
    "LoadError": "ingest.errors", "UnsupportedFile": "ingest.errors",
}
__all__ = sorted(_API)

__getattr__, __dir__ = lazy_names("ingest", _API)
