"""Core of the private question-answering service: config, models, store, retrieval, answers."""

from rag.blas import use_optimized_blas

# Must run before anything imports mlx.core (see rag/blas.py).
use_optimized_blas()

__version__ = "0.1.0"
