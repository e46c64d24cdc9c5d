"""Evaluation: reference classifiers (images, log-mel audio), Frechet distances, text statistics, one evaluator per modality."""

from pipeline.evaluation.classifier import (
    ReferenceClassifier,
    conditional_accuracy,
    load_classifier,
    load_or_train_classifier,
    save_classifier,
    train_classifier,
)
from pipeline.evaluation.evaluators import ClassifierEvaluation, Evaluator, ImageEvaluation, TextEvaluation
from pipeline.evaluation.frechet import ClassifierFeatures, classifier_frechet_distance, true_fid
from pipeline.evaluation.text import ByteNgramModel, distinct_ngrams, repeat_share, vocabulary_share, without_runs

__all__ = [
    "ByteNgramModel",
    "ClassifierEvaluation",
    "ClassifierFeatures",
    "Evaluator",
    "ImageEvaluation",
    "ReferenceClassifier",
    "TextEvaluation",
    "classifier_frechet_distance",
    "conditional_accuracy",
    "distinct_ngrams",
    "load_classifier",
    "load_or_train_classifier",
    "repeat_share",
    "save_classifier",
    "train_classifier",
    "true_fid",
    "vocabulary_share",
    "without_runs",
]
