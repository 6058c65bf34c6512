"""Benchmark: patient-level stratified bootstrap of every report metric (2,000 replicates, 5,000 studies x 5 labels).

Run: ``.venv/bin/python benchmarks/bootstrap.py [--studies 5000] [--labels 5] [--n-boot 2000] [--threads N]``.
Prints the wall time of :func:`clinmm.metrics.bootstrap_metrics` (per-label AUROC, AUPRC, sensitivity, specificity,
PPV, NPV, F1 with CIs, plus macro and micro from one joint resample) and, for scale, the time scikit-learn takes for
the AUROC of 50 replicates done the naive way (one ``roc_auc_score(sample_weight=...)`` call per replicate).
Acceptance target: <= 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--labels", type=int, default=5)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2, help="BLAS / OpenMP threads (2 = the target machine)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from clinmm.metrics import bootstrap_metrics, patient_bootstrap_weights

    rng = np.random.default_rng(0)
    n, c = args.studies, args.labels
    y = (rng.random((n, c)) < 0.25).astype(float)
    y[rng.random((n, c)) < 0.05] = np.nan  # unknown labels
    score = 1 / (1 + np.exp(-(rng.normal(size=(n, c)) + 1.5 * np.nan_to_num(y) - 1)))
    pid = rng.integers(0, args.patients, n).astype(str)
    labels = [f"label{j}" for j in range(c)]
    print(f"{n} studies, {len(set(pid))} patients, {c} labels, {args.n_boot} replicates, {args.threads} threads, "
          f"cpu_count={os.cpu_count()}, loadavg={os.getloadavg()[0]:.1f}")
    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = bootstrap_metrics(y_true=y, y_score=score, thresholds=np.full(c, 0.5), patient_ids=pid,
                                labels=labels, n_boot=args.n_boot, seed=0)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ci = res.macro["auroc"]
    print(f"bootstrap_metrics (7 metrics x {c} labels + macro + micro): wall best {min(times):.2f} s "
          f"(runs {[round(t, 2) for t in times]}), CPU time best {min(cpu):.2f} s; "
          f"macro AUROC {ci.value:.4f} ({ci.lower:.4f}-{ci.upper:.4f})")

    k = ~np.isnan(y[:, 0])
    w = patient_bootstrap_weights(pid[k], np.isin(pid[k], pid[k][y[k, 0] == 1]), n_boot=50, rng=rng)
    t0 = time.perf_counter()
    for r in range(50):
        roc_auc_score(y[k, 0], score[k, 0], sample_weight=w[r])
    naive = (time.perf_counter() - t0) / 50
    print(f"naive scikit-learn AUROC: {naive * 1000:.1f} ms per replicate -> "
          f"{naive * args.n_boot * c * 2:.1f} s for AUROC alone ({args.n_boot} x {c} labels x 2 resamples)")


if __name__ == "__main__":
    main()
