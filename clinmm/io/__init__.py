"""clinmm.io."""
