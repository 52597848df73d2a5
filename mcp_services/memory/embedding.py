"""Text embeddings for semantic memory: the bundled WordLlama model (default, offline, CPU), or an
OpenAI-compatible embeddings endpoint (`MEMORY_EMBEDDER=openai`).

Every embedder returns float32 rows of unit length (so a dot product is the cosine similarity) and
has a `name` that is stored beside each vector: when the configured model changes, stored vectors
of the old one are recognised as stale (`manage.py memory_reindex` recomputes them) and are never
compared with vectors of the new one. A text with nothing to embed (empty, or a model answering
with a zero vector) gets no vector: such an item is found by keyword search only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256
# One request's texts to an embeddings endpoint (OpenAI accepts up to 2048 inputs per request).
ENDPOINT_BATCH = 256


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """One unit-length float32 vector per text, or None for a text with nothing to embed."""
        ...


def unit_rows(matrix: np.ndarray) -> list[np.ndarray | None]:
    """Rows scaled to unit length; a zero (or non-finite) row becomes None."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    rows: list[np.ndarray | None] = []
    for row, norm in zip(matrix, norms, strict=True):
        rows.append((row / norm).astype(np.float32) if np.isfinite(norm) and norm > 1e-12 else None)
    return rows


def _import_wordllama() -> Any:
    """`import wordllama` calls `logging.basicConfig(level=INFO)` (in two of its modules): put the
    root logger back as Django's LOGGING configured it, or every library's INFO lines would
    appear."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return wordllama


class WordLlamaEmbedder:
    """WordLlama `l2_supercat` (MIT): token embeddings distilled from LLaMA 2 70B, average-pooled;
    256 dimensions, 32,000-token vocabulary, 16 MB of float16 weights inside the `wordllama` wheel.

    `load()` looks for its files in the package first, then in `cache_dir`, and otherwise
    downloads them from a model hub: the package directory as `cache_dir` and
    `disable_download=True` make a missing file an error here instead of a network call.
    """

    name = f"wordllama/{WORDLLAMA_CONFIG}-{WORDLLAMA_DIM}"
    dim = WORDLLAMA_DIM

    def __init__(self) -> None:
        wordllama = _import_wordllama()
        package = Path(wordllama.__file__).parent
        self._model = wordllama.WordLlama.load(
            config=WORDLLAMA_CONFIG, dim=WORDLLAMA_DIM, cache_dir=package, disable_download=True
        )

    def embed(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        wanted = [index for index, text in enumerate(texts) if text.strip()]
        rows: list[np.ndarray | None] = [None] * len(texts)
        if wanted:
            vectors = self._model.embed([texts[index] for index in wanted], norm=False)
            for index, vector in zip(wanted, unit_rows(vectors), strict=True):
                rows[index] = vector
        return rows


class EndpointEmbedder:
    """An OpenAI-compatible `/embeddings` endpoint (OpenAI itself, or a local server such as
    llama.cpp, vLLM or Ollama) through the official SDK: `EMBEDDINGS_URL`, `EMBEDDINGS_MODEL`,
    `EMBEDDINGS_API_KEY`."""

    def __init__(self, *, base_url: str, model: str, api_key: str, timeout: float, dimensions: int | None) -> None:
        import openai  # about 0.8 s to import: only a process that embeds through an endpoint pays it

        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=2)
        self._model = model
        self._dimensions = dimensions
        self.name = f"openai/{model}" + (f"-{dimensions}" if dimensions else "")
        self.dim = dimensions or 0  # known after the first answer

    def embed(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        from openai import omit

        wanted = [index for index, text in enumerate(texts) if text.strip()]
        rows: list[np.ndarray | None] = [None] * len(texts)
        for start in range(0, len(wanted), ENDPOINT_BATCH):
            chunk = wanted[start : start + ENDPOINT_BATCH]
            answer = self._client.embeddings.create(
                model=self._model,
                input=[texts[index] for index in chunk],
                encoding_format="float",
                dimensions=self._dimensions if self._dimensions else omit,
            )
            # The endpoint may answer out of order: `index` says which input each vector is for.
            ordered = sorted(answer.data, key=lambda item: item.index)
            if len(ordered) != len(chunk):
                raise ValueError(f"the embeddings endpoint answered {len(ordered)} vectors for {len(chunk)} texts")
            for index, vector in zip(chunk, unit_rows(np.array([item.embedding for item in ordered])), strict=True):
                rows[index] = vector
            self.dim = len(ordered[0].embedding) if ordered else self.dim
        return rows


_lock = threading.Lock()
_embedder: Embedder | None = None
_loaded = False


def build_embedder() -> Embedder | None:
    """The embedder the settings name (`MEMORY_EMBEDDER`), or None when embeddings are off."""
    cortex = settings.CORTEX
    kind = cortex["MEMORY_EMBEDDER"]
    if kind == "off":
        return None
    if kind == "wordllama":
        return WordLlamaEmbedder()
    if kind == "openai":
        if not cortex["EMBEDDINGS_URL"] or not cortex["EMBEDDINGS_MODEL"]:
            raise ImproperlyConfigured("MEMORY_EMBEDDER=openai needs EMBEDDINGS_URL and EMBEDDINGS_MODEL.")
        return EndpointEmbedder(
            base_url=cortex["EMBEDDINGS_URL"],
            model=cortex["EMBEDDINGS_MODEL"],
            api_key=cortex["EMBEDDINGS_API_KEY"] or "",
            timeout=cortex["EMBEDDINGS_TIMEOUT_SECONDS"],
            dimensions=cortex["EMBEDDINGS_DIMENSIONS"] or None,
        )
    raise ImproperlyConfigured(f"MEMORY_EMBEDDER must be wordllama, openai or off, got {kind!r}")


def get_embedder() -> Embedder | None:
    """The process's embedder, built once (the memory service loads it at start-up)."""
    global _embedder, _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                _embedder = build_embedder()
                _loaded = True
    return _embedder


class Embedded(NamedTuple):
    """Vectors for some texts and the model that made them: `model` None = not embedded (embeddings
    are off, or the endpoint failed), so the items are stored for `memory_reindex` to do later."""

    model: str | None
    vectors: list[np.ndarray | None]


def embed_texts(texts: Sequence[str]) -> Embedded:
    """Vectors for `texts` with the configured embedder, never raising: the items are stored anyway
    and found by keyword until `memory_reindex` embeds them."""
    embedder = get_embedder()
    if embedder is None:
        return Embedded(None, [None] * len(texts))
    if not texts:
        return Embedded(embedder.name, [])
    try:
        return Embedded(embedder.name, embedder.embed(texts))
    except Exception as exc:  # noqa: BLE001 - any endpoint failure: store without vectors, reindex later
        logger.warning("embedding %d text(s) with %s failed: %s", len(texts), embedder.name, exc)
        return Embedded(None, [None] * len(texts))


def embed_query(query: str) -> tuple[str, np.ndarray] | None:
    """The query's vector and model, or None (off, failed, or nothing to embed): keyword only."""
    model, [vector] = embed_texts([query])
    return (model, vector) if model is not None and vector is not None else None
