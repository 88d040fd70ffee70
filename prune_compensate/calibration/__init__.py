"""Step 2 — calibration: read samples and turn them into model inputs (``samples``), run them
through the model with hooks (``forward``), and fold what the hooks see into float64 running
statistics that never hold the activations (``statistics``)."""
