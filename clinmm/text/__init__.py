"""clinmm.text."""
