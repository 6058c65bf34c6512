"""clinmm.report."""
