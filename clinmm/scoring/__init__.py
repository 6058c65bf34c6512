"""Batch scoring internals: input discovery, the decode/model pipeline, atomic outputs, drift (see clinmm.score)."""
