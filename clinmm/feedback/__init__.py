"""clinmm.feedback."""
