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

_MODULES = {
    "rag.config": "Config ConfigError load_config replace",
    "rag.runtime": "Runtime open_runtime",
    "rag.store": "Store StoreError open_store",
    "rag.models": "ModelError",
    "rag.retrieve": "search is_relevant",
    "rag.answering": "answer stream_answer astream_answer start_answer Answer AnswerRun "
                     "SourcesEvent TokenEvent CitationEvent DoneEvent source_json",
    "rag.streams": "Busy EngineError",
    "rag.prompt": "pages_label source_title",
    "rag.citations": "Citation",
    "rag.types": "Passage Document Chunk Page Turn",
}
_API = {name: module for module, names in _MODULES.items() for name in names.split()}
__all__ = sorted(_API)

__getattr__, __dir__ = lazy_names("rag", _API)
