"""clinmm.engines."""
