"""What ``stage=eval`` measures, per modality (``modality.evaluator``).

An evaluator first gets ready on the real data (:meth:`Evaluator.prepare`: train or load the
reference classifier, fit the n-gram model), then scores generated examples next to reference
points measured the same way and at the same count: real held-out data and the tokenizer's
reconstructions of it, so a figure always says how far the generator is from what the tokenizer
and the data allow.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.diffusion.latents import data_fingerprint
from pipeline.errors import UserError
from pipeline.evaluation.classifier import ReferenceClassifier, conditional_accuracy, load_or_train_classifier, to_unit
from pipeline.evaluation.frechet import classifier_frechet_distance, true_fid
from pipeline.evaluation.text import ByteNgramModel, distinct_ngrams, repeat_share, texts_of, vocabulary_share, without_runs, words
from pipeline.media import Media, to_uint8
from pipeline.tokenizer import VQVAE

log = logging.getLogger("pipeline")


@torch.no_grad()
def reconstruct(tokenizer: VQVAE, examples: torch.Tensor, media: Media, batch_size: int = 256) -> torch.Tensor:
    """Examples through the tokenizer (encode, quantize, decode), back as examples (``media.to_data``)."""
    device = next(tokenizer.parameters()).device
    return torch.cat([media.to_data(tokenizer(chunk.to(device))[0]).cpu() for chunk in examples.split(batch_size)])


class Evaluator(ABC):
    """Scores for one modality; ``eval.json`` holds what :meth:`score` returns."""

    @abstractmethod
    def prepare(self, data: Any, cache_dir: Path, cfg: Any) -> dict[str, Any]:
        """Get ready on the real data module (set up); returns what to record about it."""

    def notes(self) -> dict[str, str]:
        """Remarks for ``eval.json`` beside the scores (what was skipped and why)."""
        return {}

    @abstractmethod
    def score(self, generated: torch.Tensor, labels: torch.Tensor | None, data: Any, tokenizer: VQVAE, media: Media, seed: int) -> dict[str, float]:
        """``eval/*`` scores of ``generated`` examples (``media.to_data`` applied), ``labels`` their classes or None."""


class ClassifierEvaluation(Evaluator):
    """Class-conditional images or audio: a reference classifier trained on the real train split scores
    conditional accuracy and the classifier Frechet distance; real-vs-real (test vs train) and
    reconstruction-vs-real are the reference points, and the classifier's accuracy on real and on
    reconstructed test examples says what the tokenizer loses.

    Args:
        frontend: ``image`` or ``logmel`` (audio; needs ``sample_rate``).
    """

    def __init__(self, frontend: str = "image", sample_rate: int | None = None) -> None:
        self.frontend, self.sample_rate = frontend, sample_rate
        self.classifier: ReferenceClassifier | None = None
        self.record: dict[str, Any] = {}

    def stored(self, examples: torch.Tensor) -> torch.Tensor:
        """Examples as they would be stored on disk (identity here; images round to 8 bits)."""
        return examples

    def prepare(self, data: Any, cache_dir: Path, cfg: Any) -> dict[str, Any]:
        self.classifier, self.record = load_or_train_classifier(
            cache_dir, data.splits["train"], data.splits["test"], int(cfg.data.num_classes), data_fingerprint(data.source_record, hflip=False),
            epochs=cfg.eval.classifier_epochs, seed=cfg.seed, frontend=self.frontend, sample_rate=self.sample_rate,
        )
        return {"classifier": self.record.get("path")}

    def score(self, generated: torch.Tensor, labels: torch.Tensor | None, data: Any, tokenizer: VQVAE, media: Media, seed: int) -> dict[str, float]:
        assert self.classifier is not None, "prepare first"
        train, test = data.splits["train"], data.splits["test"]
        num = len(generated)
        real = test.inputs(slice(0, num))
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:num]
        real_train = train.inputs(chosen)
        fake = self.stored(generated)
        scores = {
            "eval/fd_classifier": classifier_frechet_distance(self.classifier, real, fake),
            "eval/fd_classifier_real_vs_real": classifier_frechet_distance(self.classifier, real, real_train),
            "eval/fd_classifier_recon_vs_real": classifier_frechet_distance(self.classifier, real, self.stored(reconstruct(tokenizer, real_train, media))),
            "eval/classifier_test_accuracy": self.record["test_accuracy"],
            "eval/classifier_recon_accuracy": conditional_accuracy(self.classifier, self.stored(reconstruct(tokenizer, real, media)), test.labels[:num]),
        }
        if labels is not None:
            scores["eval/cond_accuracy"] = conditional_accuracy(self.classifier, fake, labels)
        return scores


class ImageEvaluation(ClassifierEvaluation):
    """:class:`ClassifierEvaluation` for images, on 8-bit images (as saved), plus true FID when
    Inception weights are present locally (``eval.inception_weights``); when absent it says so."""

    def __init__(self, inception_weights: str | None = None) -> None:
        super().__init__(frontend="image")
        self.inception_weights = inception_weights
        self.fid_note = ""

    def stored(self, examples: torch.Tensor) -> torch.Tensor:
        return to_unit(torch.from_numpy(to_uint8(examples)))

    def notes(self) -> dict[str, str]:
        return {"fid_note": self.fid_note}

    def score(self, generated: torch.Tensor, labels: torch.Tensor | None, data: Any, tokenizer: VQVAE, media: Media, seed: int) -> dict[str, float]:
        scores = super().score(generated, labels, data, tokenizer, media, seed)
        real = data.splits["test"].images[: len(generated)]
        fid, self.fid_note = true_fid(real, torch.from_numpy(to_uint8(generated)), self.inception_weights)
        if fid is not None:
            scores["eval/fid"] = fid
        log.info("eval: %s", self.fid_note)
        return scores


class TextEvaluation(Evaluator):
    """Unconditional text: bits per byte under a byte n-gram model fitted on the train split, the share
    of words found in the train vocabulary, distinct word n-grams across samples and the share of
    bytes in runs of ``repeat_run`` or more equal bytes; each beside the same for real held-out (test)
    text and, for bits per byte, the tokenizer's reconstructions. Runs of one byte cost the n-gram
    model almost nothing, so a generator that falls into them ("#####...") lowers its bits per byte
    without writing better text: ``eval/bits_per_byte_norun`` (and ``_real``, ``_ratio``) score only the
    sequences that hold no such run, generated and real alike.

    Args:
        ngram_order: order of the byte n-gram model.
        distinct_n: word n-gram length of the diversity score.
        repeat_run: shortest run of equal bytes that the repeat share counts.
    """

    def __init__(self, ngram_order: int = 5, distinct_n: int = 4, repeat_run: int = 10) -> None:
        if not 1 <= ngram_order <= 7:
            raise UserError(f"modality.evaluator.ngram_order must be 1..7 (n-grams are coded in int64), got {ngram_order}")
        if distinct_n < 1:
            raise UserError(f"modality.evaluator.distinct_n must be >= 1 (words per n-gram), got {distinct_n}")
        if repeat_run < 2:
            raise UserError(f"modality.evaluator.repeat_run must be >= 2 (a run is 2 or more equal bytes), got {repeat_run}")
        self.ngram, self.distinct_n, self.repeat_run = ByteNgramModel(ngram_order), distinct_n, repeat_run
        self.vocabulary: set[str] = set()

    def prepare(self, data: Any, cache_dir: Path, cfg: Any) -> dict[str, Any]:
        train = data.splits["train"].sequences.numpy()
        self.ngram.fit(train)
        self.vocabulary = {w for ws in words(texts_of(train)) for w in ws}
        return {"ngram_order": self.ngram.order, "vocabulary_size": len(self.vocabulary)}

    def score(self, generated: torch.Tensor, labels: torch.Tensor | None, data: Any, tokenizer: VQVAE, media: Media, seed: int) -> dict[str, float]:
        test = data.splits["test"]
        num = len(generated)
        real = test.inputs(slice(0, num))
        sets = {"": generated, "_real": real, "_recon": reconstruct(tokenizer, real, media)}
        arrays = {name: x.numpy().astype(np.uint8) for name, x in sets.items()}
        texts = {name: texts_of(x) for name, x in arrays.items()}
        n = self.distinct_n
        scores = {f"eval/bits_per_byte{name}": self.ngram.bits_per_byte(x) for name, x in arrays.items()}
        scores.update({f"eval/vocab_share{name}": vocabulary_share(texts[name], self.vocabulary) for name in ("", "_real")})
        scores.update({f"eval/distinct_{n}{name}": distinct_ngrams(texts[name], n) for name in ("", "_real")})
        scores.update({f"eval/repeat_share{name}": repeat_share(arrays[name], self.repeat_run) for name in ("", "_real")})
        scores.update({f"eval/bits_per_byte_norun{name}": self.ngram.bits_per_byte(without_runs(arrays[name], self.repeat_run)) for name in ("", "_real")})
        scores["eval/bits_per_byte_norun_ratio"] = scores["eval/bits_per_byte_norun"] / scores["eval/bits_per_byte_norun_real"]
        scores["eval/bits_per_byte_ratio"] = scores["eval/bits_per_byte"] / scores["eval/bits_per_byte_real"]
        scores[f"eval/distinct_{n}_ratio"] = scores[f"eval/distinct_{n}"] / max(scores[f"eval/distinct_{n}_real"], 1e-12)
        return scores
