"""Private, cited question answering over your own documents: the core.

The public API (everything else is an implementation module):

    import rag
    runtime = rag.open_runtime(rag.load_config({"db": "~/rag-store"}))
    passages = rag.search("battery storage", runtime, k=5)        # ranked Passages
    result = rag.answer("What did the report say?", runtime)       # Answer with citations
    for event in rag.stream_answer("...", runtime): ...            # the same, as events

Ingestion is the `ingest` package (`ingest.ingest_paths`). Names are loaded on
first use, so `import rag` stays cheap (it only picks the BLAS, see rag/blas.py).
"""


from rag.blas import use_optimized_blas
from rag.lazy import lazy_names

# Must run before anything imports mlx.core (see rag/blas.py).
use_optimized_blas()

__version__ = "0.1.0"

_API = {
    "Config": "rag.config", "load_config": "rag.config", "ConfigError": "rag.config",
    "replace": "rag.config",
    "Runtime": "rag.runtime", "open_runtime": "rag.runtime",
    "Store": "rag.store", "StoreError": "rag.store", "open_store": "rag.store",
    "ModelError": "rag.models",
    "search": "rag.retrieve", "is_relevant": "rag.retrieve",
    "answer": "rag.answer", "stream_answer": "rag.answer", "Answer": "rag.answer",
    "SourcesEvent": "rag.answer", "TokenEvent": "rag.answer", "CitationEvent": "rag.answer",
    "DoneEvent": "rag.answer", "source_json": "rag.answer",
    "pages_label": "rag.prompt", "source_title": "rag.prompt",
    "Citation": "rag.citations", "Passage": "rag.types", "Document": "rag.types",
    "Chunk": "rag.types", "Page": "rag.types",
}
__all__ = sorted(_API)

__getattr__, __dir__ = lazy_names("rag", _API)
