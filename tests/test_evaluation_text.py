"""Text scores: the byte n-gram model's bits per byte, vocabulary share, distinct n-grams and repeat share, on text the tests write."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.data.text import make_synthetic_text, pack_documents
from pipeline.errors import UserError
from pipeline.evaluation import TextEvaluation
from pipeline.evaluation.text import ByteNgramModel, compact, distinct_ngrams, repeat_share, vocabulary_share, without_runs


def sequences(texts: list[str], length: int = 32) -> np.ndarray:
    return pack_documents(texts, length)


def test_a_model_that_saw_nothing_is_uniform_over_bytes() -> None:
    model = ByteNgramModel(order=3).fit(np.zeros((1, 8), dtype=np.uint8))  # padding only
    assert model.bits_per_byte(sequences(["hello"])) == pytest.approx(8.0)


def test_a_repeated_pattern_is_nearly_free_and_its_probabilities_sum_to_one() -> None:
    model = ByteNgramModel(order=3).fit(sequences(["ab" * 15] * 20))
    assert model.bits_per_byte(sequences(["ab" * 15])) < 0.3
    assert model.bits_per_byte(sequences(["ba" * 15])) < model.bits_per_byte(sequences(["zq" * 15]))
    # P(next | "ab") over the 255 non-padding bytes: a distribution (byte 0 keeps at most its 1/256 uniform share)
    candidates = np.array([[ord("a"), ord("b"), b] for b in range(1, 256)], dtype=np.uint8)
    probs = 2.0 ** model.log2_probs(candidates).reshape(255, 3)[:, 2]
    assert 1.0 - 1.0 / 256 - 1e-9 <= probs.sum() <= 1.0 + 1e-9
    assert probs.argmax() + 1 == ord("a")


def test_real_text_scores_between_its_training_text_and_noise() -> None:
    documents = make_synthetic_text(400, seed=0).splits["train"][0]
    train, held_out = sequences(documents[:300], 128), sequences(documents[300:], 128)
    model = ByteNgramModel(order=5).fit(train)
    noise = np.random.default_rng(0).integers(1, 256, held_out.shape).astype(np.uint8)
    seen, unseen, random = model.bits_per_byte(train), model.bits_per_byte(held_out), model.bits_per_byte(noise)
    assert seen <= unseen < 2.0 < 7.0 < random


def test_padding_anywhere_is_dropped_like_decoding_drops_it() -> None:
    gappy = np.array([[104, 0, 105, 0, 0, 33]], dtype=np.uint8)
    assert compact(gappy).tolist() == [[104, 105, 33, 0, 0, 0]]
    model = ByteNgramModel(order=2).fit(sequences(["hi! hi! hi!"]))
    assert model.bits_per_byte(gappy) == pytest.approx(model.bits_per_byte(compact(gappy)))
    assert math.isnan(model.bits_per_byte(np.zeros((2, 4), dtype=np.uint8)))


def test_vocabulary_share_and_distinct_ngrams() -> None:
    vocabulary = {"the", "cat", "sat", "on", "mat", "don't"}
    assert vocabulary_share(["The cat sat on the mat.", "Don't zzq!"], vocabulary) == pytest.approx(7 / 8)
    assert distinct_ngrams(["a b c d e", "a b c d"], n=4) == pytest.approx(2 / 3)  # (a b c d) twice, (b c d e) once
    assert distinct_ngrams(["one two three"], n=4) == 0.0  # no 4-gram at all
    assert distinct_ngrams(["a b c d a b c d a b c d"], n=4) == pytest.approx(4 / 9)


def test_repeat_share_counts_bytes_in_long_runs_and_explains_a_low_bits_per_byte() -> None:
    prose = "It's all in the mind, ya know. "
    assert repeat_share(sequences([prose]), run=10) == 0.0
    ruled = sequences([prose + "#" * 12 + " end"], length=64)
    assert repeat_share(ruled, run=10) == pytest.approx(12 / (len(prose) + 16))
    assert repeat_share(ruled, run=13) == 0.0
    gappy = np.array([[35, 35, 0, 35, 35, 35, 104]], dtype=np.uint8)  # padding inside a run is dropped, as decoding drops it
    assert repeat_share(gappy, run=5) == pytest.approx(5 / 6)
    assert repeat_share(np.zeros((2, 4), dtype=np.uint8)) == 0.0
    assert without_runs(np.concatenate([sequences([prose], length=64), ruled]), run=10).tolist() == sequences([prose], length=64).tolist()
    # a model that saw a few runs predicts a run's next byte almost for free: runs lower bits per byte
    model = ByteNgramModel(order=5).fit(sequences([prose, "=" * 20, "#" * 20, "the end of it all"] * 5, length=64))
    babble = "Iss all im tha nind, ye knov. "
    assert model.bits_per_byte(sequences([babble + "#" * 30], length=64)) < 0.6 * model.bits_per_byte(sequences([babble], length=64))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"repeat_run": 1}, "repeat_run must be >= 2"),
    ({"ngram_order": 0}, "ngram_order must be 1..7"),
    ({"ngram_order": 8}, "ngram_order must be 1..7"),
    ({"distinct_n": 0}, "distinct_n must be >= 1"),
])
def test_out_of_range_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(UserError, match=message):
        TextEvaluation(**kwargs)
