"""One embedder shared by many concurrent sessions: repeated texts are embedded once, and the texts that
sessions ask for while a batch runs are embedded together in the next one, off the event loop.

Why: a generation run embeds every stored memory, reflection question and sticker query. Called inline, each
embedding (about 10 ms for one text with the default ONNX model on 2 cores) stalls every other session's
network I/O; both agents also store the same utterances, so half the texts were embedded twice. A batch of 16
costs about 5.5 ms a text instead of 10 (bench/agent4sc.py, scaling), and the worker thread releases the GIL
while ONNX runs, so the event loop keeps serving the other sessions on the second core.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stickerconv.stickers.embed import Embedder

MEMO_TEXTS = 16_384  # about 25 MB of 384-d vectors: every distinct text of a 32-session run stays cached


class BatchedEmbedder:
    """Wraps an embedder for use from one event loop. ``embed`` stays synchronous (an index search may call
    it); ``aembed`` batches across callers. Vectors match the wrapped embedder's for the same text (to float
    rounding: the mean pooling ignores the padding a batch adds)."""

    def __init__(self, embedder: Embedder, memo_texts: int = MEMO_TEXTS) -> None:
        self.inner = embedder
        self.name, self.dim = embedder.name, embedder.dim
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_texts = memo_texts
        self._lock = threading.Lock()
        self._waiting: list[tuple[list[str], asyncio.Future]] = []
        self._draining = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")  # one batch at a time
        self.texts_embedded = 0  # distinct texts that reached the model (the rest came from the memo)
        self.batches = 0

    def embed(
        self, texts: Sequence[str], batch_size: int = 64, on_progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        return self._from_memo(list(texts), batch_size)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim): waits for the batch that holds these texts."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            if all(t in self._memo for t in texts):
                return np.stack([self._memo[t] for t in texts])
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((texts, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                texts = list(dict.fromkeys(t for batch, _ in waiting for t in batch))
                try:
                    vectors = await loop.run_in_executor(self._worker, self._from_memo, texts, 64)  # (T, dim)
                except Exception as exc:  # every waiter hears of it; none hangs
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                row = {text: i for i, text in enumerate(texts)}
                for batch, future in waiting:
                    if not future.done():  # a cancelled session no longer waits
                        future.set_result(vectors[[row[t] for t in batch]])
        finally:
            self._draining = False

    def _from_memo(self, texts: list[str], batch_size: int) -> np.ndarray:
        with self._lock:
            known = {t: self._memo[t] for t in texts if t in self._memo}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known.update(zip(missing, self.inner.embed(missing, batch_size=batch_size), strict=True))
        with self._lock:
            for text in dict.fromkeys(texts):
                self._memo[text] = known[text]
                self._memo.move_to_end(text)
            while len(self._memo) > self._memo_texts:
                self._memo.popitem(last=False)
            if missing:
                self.texts_embedded += len(missing)
                self.batches += 1
        return np.stack([known[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


async def aembed(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed without stalling the event loop when the embedder is a ``BatchedEmbedder``; a plain embedder (a
    test's hash embedder, say) is called directly."""
    if isinstance(embedder, BatchedEmbedder):
        return await embedder.aembed(texts)
    return embedder.embed(list(texts))
