"""Generator speed: wall and CPU seconds for ``generate_sample_data`` (acceptance: 1,000 studies < 60 s, one core).

    .venv/bin/python benchmarks/synthetic_generate.py --studies 1000 --seed 0

Torch is not used by the generator; numpy/scipy run single-threaded here (OMP/OPENBLAS threads set to 1 before
import), so CPU seconds ≈ one core's work. On a shared machine compare CPU seconds, not wall seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from clinmm.data.synthetic import SyntheticOptions, generate_sample_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="clinmm-synth-") as tmp:
        out = Path(tmp) / "set"
        wall, cpu = time.perf_counter(), time.process_time()
        summary = generate_sample_data(out, studies=args.studies, seed=args.seed,
                                       options=SyntheticOptions(image_size=args.image_size))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{summary.studies} studies ({summary.patients} patients), image size {args.image_size}: "
          f"wall {wall:.1f} s, CPU {cpu:.1f} s, {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
