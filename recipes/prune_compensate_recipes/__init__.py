"""MKGC recipes built on prune_compensate (plugins of `pc`); the core never imports this package."""
