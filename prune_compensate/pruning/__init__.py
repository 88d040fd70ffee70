"""Step 3 — ranking, fitting and replacement: rank the attention layers (``profile``), fit a
linear map for each dropped one (``fit``, ``bottom_up``), optionally distil it (``heal``), swap it
in (``compensation``, ``swap``), and report the held-out error (``error``). ``prune.prune_`` runs
the whole step; ``config.PruneConfig`` says how."""
