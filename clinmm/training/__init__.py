"""Training plumbing: resumable training state (:mod:`.state`) and data-parallel helpers (:mod:`.ddp`)."""
