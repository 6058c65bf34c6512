"""Fuzzing ingestion with hypothesis: truncation, bit flips, deleted tags, absurd header values.

Every case must end with a status from the enum, inside its deadline, without raising, and the process's memory
must not keep growing. The default run does 500 cases in-process plus a batch of corrupted compressed files through
the guarded worker pool; ``-m slow`` does 10,000 + 1,000.
"""

from __future__ import annotations

import io
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from io_factory import make_dataset, pydicom_test_files

from clinmm.io.dicom import pydicom_quiet
from clinmm.io.inspect import inspect_folder, probe_file
from clinmm.io.status import Status

STATUSES = {s.value for s in Status}
CASE_DEADLINE_S = 5.0  # generous: the machine running CI may be shared; a typical case takes a few milliseconds
MEMORY_CAP_MB = 150.0
MAX_PIXELS = 4 * 1024 * 1024


def _base_bytes() -> bytes:
    rng = np.random.default_rng(0)
    ds = make_dataset(rng.integers(0, 4096, size=(16, 16)).astype(np.uint16), bits_stored=12, WindowCenter=[900, 40],
                      WindowWidth=[1800, 400], RescaleSlope=1, RescaleIntercept=-1024,
                      position=(0.0, 0.0, 1.0), SliceThickness=1.0)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


BASE = _base_bytes()
_BASE_DS = pydicom.dcmread(io.BytesIO(BASE))
TAGS = [int(e.tag) for e in _BASE_DS] + [int(e.tag) for e in _BASE_DS.file_meta]

truncations = st.integers(0, len(BASE) - 1).map(lambda n: ("truncate", n))
flips = st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 7)), min_size=1, max_size=16).map(
    lambda f: ("flip", f))
deletions = st.lists(st.sampled_from(TAGS), min_size=1, max_size=6, unique=True).map(lambda t: ("delete", t))
absurd = st.fixed_dictionaries(
    {},
    optional={
        "Rows": st.sampled_from([0, 1, 3, 17, 4096, 40000, 65535]),
        "Columns": st.sampled_from([0, 1, 15, 65535]),
        "BitsAllocated": st.sampled_from([0, 1, 7, 8, 12, 16, 24, 32, 64, 255]),
        "BitsStored": st.sampled_from([0, 1, 8, 12, 16, 40]),
        "SamplesPerPixel": st.sampled_from([0, 1, 2, 3, 4]),
        "NumberOfFrames": st.sampled_from(["0", "1", "2", "999999999", "-4", "x"]),
        "PixelRepresentation": st.sampled_from([0, 1, 7]),
        "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "RGB", "YBR_FULL_422", "PALETTE COLOR", "HSV",
                                                      ""]),
        "WindowWidth": st.sampled_from([0, -5, 1, 1e12]),
        "RescaleSlope": st.sampled_from([0, -1, 1e308]),
    },
).filter(bool).map(lambda d: ("absurd", d))
mutations = st.one_of(truncations, flips, deletions, absurd)


def _mutate(kind: str, arg) -> bytes | None:
    if kind == "truncate":
        return BASE[:arg]
    if kind == "flip":
        data = bytearray(BASE)
        for pos, bit in arg:
            data[pos] ^= 1 << bit
        return bytes(data)
    ds = pydicom.dcmread(io.BytesIO(BASE))
    if kind == "delete":
        for tag in arg:
            if tag in ds:
                del ds[tag]
            elif tag in ds.file_meta:
                del ds.file_meta[tag]
    else:
        with pydicom_quiet():  # the test's own invalid values: no validator chatter
            for key, value in arg.items():
                try:
                    setattr(ds, key, value)
                except Exception:
                    return None
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=False)
    except Exception:
        return None  # pydicom refuses to write it: nothing to read
    return buf.getvalue()


class _Harness:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clinmm-fuzz-"))
        self.cases = 0
        self.statuses: dict[str, int] = {}
        self.proc = psutil.Process()
        self.rss0 = 0

    def run(self, mutation) -> None:
        data = _mutate(*mutation)
        if data is None:
            return
        path = self.dir / "case.dcm"
        path.write_bytes(data)
        start = time.monotonic()
        row = probe_file((str(path), str(self.dir), b"f" * 32, 1 << 20, MAX_PIXELS))
        took = time.monotonic() - start
        assert row.status in STATUSES
        assert took < CASE_DEADLINE_S, (mutation, took)
        self.cases += 1
        self.statuses[row.status] = self.statuses.get(row.status, 0) + 1
        if self.cases == 50:
            self.rss0 = self.proc.memory_info().rss  # after warm-up (imports, caches)

    def check_memory(self) -> float:
        growth = (self.proc.memory_info().rss - self.rss0) / 2**20
        assert growth < MEMORY_CAP_MB, f"memory grew {growth:.0f} MiB over {self.cases} cases"
        return growth


def _fuzz(n: int) -> _Harness:
    harness = _Harness()

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutations)
    def case(mutation) -> None:
        harness.run(mutation)

    try:
        case()
    finally:
        shutil.rmtree(harness.dir, ignore_errors=True)
    growth = harness.check_memory()
    statuses = dict(sorted(harness.statuses.items()))
    print(f"fuzz: {harness.cases} cases, statuses {statuses}, RSS growth {growth:.1f} MiB")
    return harness


def test_fuzz_default_500_cases() -> None:
    harness = _fuzz(520)
    assert harness.cases >= 500
    assert len(harness.statuses) >= 4  # the mutations reach several statuses, not one early exit


@pytest.mark.slow
def test_fuzz_slow_10000_cases() -> None:
    harness = _fuzz(10_800)
    assert harness.cases >= 10_000


def _compressed_batch(folder: Path, n: int, seed: int) -> None:
    rnd = random.Random(seed)
    sources = [pydicom_test_files() / name for name in ("JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                                          "JPEG-LL.dcm", "MR_small_jpeg_ls_lossless.dcm")]
    sources = [s for s in sources if s.exists()]
    for i in range(n):
        data = bytearray(sources[i % len(sources)].read_bytes())
        # corrupt only the encoded pixel stream (the last 80 % of the file), so the decoders see it
        lo = len(data) // 5
        for _ in range(rnd.randint(1, 40)):
            data[rnd.randrange(lo, len(data))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            data = data[: rnd.randrange(lo, len(data))]
        (folder / f"c{i:05d}").write_bytes(bytes(data))


def _check_compressed(tmp_path: Path, n: int) -> None:
    _compressed_batch(tmp_path, n, seed=n)
    summary = inspect_folder(tmp_path, workers=2, progress=False, deadline_s=20.0, max_pixels=MAX_PIXELS)
    assert summary.n_files == n
    assert all(r.status in STATUSES for r in summary.rows)
    print(f"compressed fuzz: {n} files, {dict((k, v) for k, v in summary.counts.items() if v)}")


def test_fuzz_compressed_through_worker_pool(tmp_path: Path) -> None:
    _check_compressed(tmp_path, 60)


@pytest.mark.slow
def test_fuzz_compressed_through_worker_pool_slow(tmp_path: Path) -> None:
    _check_compressed(tmp_path, 1000)


def test_no_memory_growth_when_replaying_corrupt_files(tmp_path: Path) -> None:
    """Hypothesis keeps its own per-example data, so the cap above is loose; replaying the same corrupt files
    round after round isolates clinmm: RSS must stay flat after the first round."""
    rnd = random.Random(0)
    datas = []
    for _ in range(150):
        k = rnd.random()
        if k < 0.33:
            mutation = ("truncate", rnd.randrange(len(BASE)))
        elif k < 0.66:
            mutation = ("flip", [(rnd.randrange(len(BASE)), rnd.randrange(8)) for _ in range(4)])
        else:
            mutation = ("delete", rnd.sample(TAGS, 2))
        data = _mutate(*mutation)
        if data is not None:
            datas.append(data)
    path = tmp_path / "case.dcm"
    proc = psutil.Process()
    rss = []
    for _ in range(4):
        for data in datas:
            path.write_bytes(data)
            assert probe_file((str(path), "", b"f" * 32, 1 << 20, MAX_PIXELS)).status in STATUSES
        rss.append(proc.memory_info().rss / 2**20)
    assert rss[-1] - rss[0] < 10.0, rss
