"""Shared MKGC layer for the recipes: datasets with their modalities, and filtered evaluation."""

from .data import KGDataset, load_kg, relation_categories
from .evaluate import LinkPredictionResult, evaluate_link_prediction

__all__ = ["KGDataset", "LinkPredictionResult", "evaluate_link_prediction", "load_kg", "relation_categories"]
