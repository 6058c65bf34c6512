"""clinmm.data."""
