"""Step 4 — the checkpoint: what a pruned folder holds (``format``), writing it (``save``, or
``delta`` for change-only checkpoints), reloading it in one call (``reload``), and the files a
model's ecosystem needs beside the weights (``usage_files``)."""
