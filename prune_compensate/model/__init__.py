"""Step 1 — the model: load it (local folder or hub id, ``load``, ``hub``) and find its text
decoder by structure (``locate``: the block list, each block's attention core, the residual
stream after attention). Imports nothing from the later steps."""
