"""clinmm.explain."""
