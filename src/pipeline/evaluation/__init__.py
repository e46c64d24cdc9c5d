"""Evaluation: a reference classifier per data set, classifier Frechet distance, conditional accuracy, true FID."""

from pipeline.evaluation.classifier import (
    ReferenceClassifier,
    conditional_accuracy,
    load_classifier,
    load_or_train_classifier,
    save_classifier,
    train_classifier,
)
from pipeline.evaluation.frechet import ClassifierFeatures, classifier_frechet_distance, true_fid

__all__ = [
    "ClassifierFeatures",
    "ReferenceClassifier",
    "classifier_frechet_distance",
    "conditional_accuracy",
    "load_classifier",
    "load_or_train_classifier",
    "save_classifier",
    "train_classifier",
    "true_fid",
]
