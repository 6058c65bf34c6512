"""Throughput of ``clinmm inspect`` vs plain ``pydicom.dcmread(...).pixel_array`` on the same files, same run.

Writes N uncompressed 512×512 16-bit CT files (default 1,000) and times:

- ``plain``: one process, ``dcmread(path).pixel_array`` per file (the floor: parse + unpack, nothing else);
- ``inspect in-process``: ``inspect_folder(workers=0)`` (strict checks, pixel pipeline, de-identified row);
- ``inspect workers=W``: ``inspect_folder(workers=W)``, the ``clinmm inspect`` path (guarded worker processes).

Figures: files/s (wall), and files per CPU-second (user+sys of this process and its children), which is the
files/s/core figure and does not depend on how busy a shared machine is. Run:

    python benchmarks/inspect_throughput.py [--n 1000] [--workers 2] [--dir /tmp/x]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from clinmm.io.inspect import inspect_folder


def _cpu() -> float:
    """CPU seconds of this process, its reaped children, and the forkserver's reaped children (the decode workers
    are forked by the forkserver, so they are its children, not ours)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def write_files(folder: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID, ds.Modality = CTImageStorage, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = "BENCH^MARK", "B0001"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(i)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.PixelData = rng.integers(0, 4096, size=(size, size), dtype=np.uint16).tobytes()
        path = folder / f"IM{i:05d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="clinmm-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        paths = write_files(folder, args.n, args.size)
        print(f"wrote {len(paths)} files of {args.size}x{args.size} uint16 in {time.perf_counter() - t:.1f}s")
        for p in paths[:50]:  # warm the page cache / imports equally for every contender
            pydicom.dcmread(p).pixel_array
        results = []

        c0, t0 = _cpu(), time.perf_counter()
        for p in paths:
            pydicom.dcmread(p).pixel_array
        results.append(("plain dcmread().pixel_array", 1, time.perf_counter() - t0, _cpu() - c0))

        c0, t0 = _cpu(), time.perf_counter()
        s = inspect_folder(folder, workers=0, progress=False)
        assert s.n_ok == len(paths), s.counts
        results.append(("clinmm inspect, in-process", 1, time.perf_counter() - t0, _cpu() - c0))

        c0, t0 = _cpu(), time.perf_counter()
        s = inspect_folder(folder, workers=args.workers, progress=False)
        assert s.n_ok == len(paths), s.counts
        results.append((f"clinmm inspect, workers={args.workers}", args.workers, time.perf_counter() - t0,
                        _cpu() - c0))

        print(f"{'contender':<34} {'wall s':>7} {'files/s':>8} {'files/s/core(wall)':>19} {'CPU s':>7} "
              f"{'files/CPU-s':>11}")
        for name, cores, wall, cpu in results:
            n = len(paths)
            print(f"{name:<34} {wall:7.2f} {n / wall:8.1f} {n / wall / cores:19.1f} {cpu:7.2f} {n / cpu:11.1f}")
        plain_cpu = results[0][3]
        print(f"inspect CPU cost per file vs plain: x{results[1][3] / plain_cpu:.2f} (in-process), "
              f"x{results[2][3] / plain_cpu:.2f} (workers)")
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
