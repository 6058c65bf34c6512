"""clinmm.models."""
