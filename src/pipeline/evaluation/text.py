"""Scores for generated text: bits per byte under a byte n-gram model of the train split, the share of
words found in the train vocabulary, diversity as distinct word 4-grams across samples, and the share
of bytes in long runs of one byte.

Each score is meant to be read beside the same figure for real held-out text at the same count:
a generator that copies the train set scores like real text on the first two and lower on
diversity; one that babbles scores high on bits per byte and low on vocabulary share; one that
falls into runs of one byte ("#####...") scores low bits per byte (the n-gram model predicts a run's
next byte almost for free) and a high repeat share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

from pipeline.data.text import PAD, decode_bytes

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def compact(sequences: np.ndarray) -> np.ndarray:
    """Byte sequences ``(N, L)`` with every padding byte moved to the end (generated text may hold
    zeros anywhere; they are dropped, as :func:`~pipeline.data.text.decode_bytes` drops them)."""
    out = np.full_like(sequences, PAD)
    for row, sequence in zip(out, sequences):
        kept = sequence[sequence != PAD]
        row[: len(kept)] = kept
    return out


class ByteNgramModel:
    """An interpolated Witten-Bell byte n-gram model: n-grams never cross a sequence or its padding.

    ``P_k(b | h) = (c(h b) + T(h) P_{k-1}(b | h')) / (c(h) + T(h))``, with ``T(h)`` the number of
    distinct bytes seen after ``h``, ``h'`` the history one byte shorter, and ``P_0`` uniform over
    256 bytes; a history never seen falls back to the shorter one. Counts are kept as sorted
    integer codes of the n-grams (base 256, so orders up to 7 fit in int64) and looked up with
    binary search.
    """

    def __init__(self, order: int = 5) -> None:
        if not 1 <= order <= 7:
            raise ValueError(f"order must be 1..7, got {order}")
        self.order = order
        self.grams: list[tuple[np.ndarray, np.ndarray]] = []  # per order k: (sorted codes, counts)
        self.contexts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per order k: (sorted history codes, c(h), T(h))

    @staticmethod
    def _windows(sequences: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes of every length-``k`` window ``(N, L - k + 1)`` and whether it holds no padding."""
        windows = np.lib.stride_tricks.sliding_window_view(sequences.astype(np.int64), k, axis=1)
        weights = 256 ** np.arange(k - 1, -1, -1, dtype=np.int64)
        return windows @ weights, (windows != PAD).all(axis=-1)

    def fit(self, sequences: np.ndarray) -> ByteNgramModel:
        sequences = compact(np.asarray(sequences, dtype=np.uint8))
        self.grams, self.contexts = [], []
        for k in range(1, self.order + 1):
            codes, valid = self._windows(sequences, k)
            grams, counts = np.unique(codes[valid], return_counts=True)
            histories, first = np.unique(grams // 256, return_index=True)
            totals = np.add.reduceat(counts, first) if len(grams) else counts
            types = np.diff(np.append(first, len(grams)))
            self.grams.append((grams, counts))
            self.contexts.append((histories, totals, types))
        return self

    @staticmethod
    def _lookup(keys: np.ndarray, values: Iterable[np.ndarray], query: np.ndarray) -> list[np.ndarray]:
        """``values`` at the positions of ``query`` in sorted ``keys``; 0 where a query is absent."""
        index = np.clip(np.searchsorted(keys, query), 0, max(len(keys) - 1, 0))
        found = keys[index] == query if len(keys) else np.zeros(query.shape, dtype=bool)
        return [np.where(found, v[index], 0) if len(keys) else np.zeros(query.shape, dtype=np.int64) for v in values]

    def log2_probs(self, sequences: np.ndarray) -> np.ndarray:
        """``log2 P(byte | history)`` of every non-padding byte of ``sequences`` (after :func:`compact`), flattened."""
        if not self.grams:
            raise RuntimeError("fit the model first")
        sequences = compact(np.asarray(sequences, dtype=np.uint8))
        length = sequences.shape[1]
        prob = np.full(sequences.shape, 1.0 / 256)
        for k in range(1, self.order + 1):
            if k > length:
                break
            codes, valid = self._windows(sequences, k)  # window j ends at byte j + k - 1
            (count,) = self._lookup(self.grams[k - 1][0], [self.grams[k - 1][1]], codes)
            histories, totals, types = self.contexts[k - 1]
            total, distinct = self._lookup(histories, [totals, types], codes // 256)
            lower = prob[:, k - 1 :]
            update = valid & (total > 0)
            prob[:, k - 1 :] = np.where(update, (count + distinct * lower) / np.maximum(total + distinct, 1), lower)
        return np.log2(prob[sequences != PAD])

    def bits_per_byte(self, sequences: np.ndarray) -> float:
        """Average negative log2-probability per non-padding byte."""
        logs = self.log2_probs(sequences)
        return float(-logs.mean()) if logs.size else math.nan


def words(texts: Iterable[str]) -> list[list[str]]:
    """Lower-cased words (letters, inner apostrophes) of each text."""
    return [WORD.findall(text.lower()) for text in texts]


def vocabulary_share(texts: Iterable[str], vocabulary: set[str]) -> float:
    """Share of the word tokens of ``texts`` found in ``vocabulary``."""
    tokens = [w for ws in words(texts) for w in ws]
    return sum(w in vocabulary for w in tokens) / len(tokens) if tokens else 0.0


def distinct_ngrams(texts: Iterable[str], n: int = 4) -> float:
    """Distinct word ``n``-grams over all word ``n``-grams across the texts (n-grams stay within a text)."""
    grams = [tuple(ws[i : i + n]) for ws in words(texts) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def run_bytes(sequences: np.ndarray, run: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: its non-padding bytes (after :func:`compact`) that lie in runs of at least ``run`` equal bytes, and all its non-padding bytes."""
    sequences = compact(np.asarray(sequences, dtype=np.uint8))
    in_runs, totals = np.zeros(len(sequences), dtype=np.int64), (sequences != PAD).sum(axis=1)
    for i, (sequence, total) in enumerate(zip(sequences, totals)):
        if total:
            starts = np.flatnonzero(np.diff(sequence[:total].astype(np.int16), prepend=-1))
            lengths = np.diff(np.append(starts, total))
            in_runs[i] = lengths[lengths >= run].sum()
    return in_runs, totals


def repeat_share(sequences: np.ndarray, run: int = 10) -> float:
    """Share of the non-padding bytes that lie in runs of at least ``run`` equal bytes."""
    in_runs, totals = run_bytes(sequences, run)
    return float(in_runs.sum() / totals.sum()) if totals.sum() else 0.0


def without_runs(sequences: np.ndarray, run: int = 10) -> np.ndarray:
    """The sequences that hold no run of ``run`` equal bytes."""
    return np.asarray(sequences)[run_bytes(sequences, run)[0] == 0]


def texts_of(sequences: np.ndarray) -> list[str]:
    return [decode_bytes(sequence) for sequence in sequences]
