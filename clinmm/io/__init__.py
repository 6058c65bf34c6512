"""clinmm.io: DICOM ingestion (see docs/ingestion.md).

- :mod:`clinmm.io.load` — ``load_image(path)``: a file or series folder → :class:`clinmm.io.study.ImageVolume`.
- :mod:`clinmm.io.dicom` — strict per-file read, SOP class allow-list, bounds, pixel pipeline.
- :mod:`clinmm.io.series` — geometric slice order, series checks, series choice rule.
- :mod:`clinmm.io.inspect` — ``inspect_folder``: one de-identified status row per file (``clinmm inspect``).
- :mod:`clinmm.io.worker` — guarded worker processes (per-file deadline, crash containment).
- :mod:`clinmm.io.deid` — PS3.15 Annex E basic profile (dicom-anonymizer) for every shown / exported field.
- :mod:`clinmm.io.keys` — salted study / series keys; :mod:`clinmm.io.provenance` — provenance JSON.
- :mod:`clinmm.io.decoders` — transfer syntaxes this installation decodes; :mod:`clinmm.io.status` — the statuses.

Submodules are imported on demand (nothing heavy is imported with the package).
"""
