"""Scoring shared by pruning and evaluation: sentence embeddings, retrieval metrics, pairs."""
