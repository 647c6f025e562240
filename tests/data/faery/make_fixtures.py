"""Writes the faery fixtures in this folder and `expected.json`, what faery reads back from them.

Run once with faery 0.7.1 and numpy (any Python environment that has them, e.g.
`python3 -m venv /tmp/faery-env && /tmp/faery-env/bin/pip install faery==0.7.1 numpy`, then
`/tmp/faery-env/bin/python tests/data/faery/make_fixtures.py`). The tests do not need faery:
they decode the committed files and compare with `expected.json`.

The events are generated below (seeded): bursts along rows (so EVT 3.0 vectors appear), both
polarities, gaps that cross EVT 2.0 and EVT 3.0 TIME_HIGH wraps, and an absolute start time,
so that faery writes a large `% t0` origin (it subtracts the first timestamp and keeps it in
the header).
"""
import json
import pathlib

import faery
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
START = 1_700_000_123_456_789  # µs, a wall-clock time: faery stores it as t0


def events(width, height, n, seed):
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=faery.EVENTS_DTYPE)
    t = START
    i = 0
    while i < n:
        # A burst: a run of columns on one row at one time, then singles.
        run = int(rng.integers(1, 20))
        x0 = int(rng.integers(0, width - run))
        y = int(rng.integers(0, height))
        on = bool(rng.integers(0, 2))
        for k in range(min(run, n - i)):
            out[i] = (t, x0 + k, y, on)
            i += 1
        gap = int(rng.choice([0, 1, 3, 50, 4095, 70_000, 6_000_000], p=[0.2, 0.3, 0.2, 0.2, 0.05, 0.04, 0.01]))
        t += gap
    return out


def checksum(ev):
    """Order-sensitive: sum over i of (i + 1) * mix(key), wrapping; the key packs t (XOR),
    x << 40, y << 52 and polarity << 63 (the checksum of tests/it/formats_prophesee.rs)."""
    t = ev["t"].astype(np.uint64)
    key = (ev["x"].astype(np.uint64) << np.uint64(40)) ^ (ev["y"].astype(np.uint64) << np.uint64(52))
    key ^= ev["on"].astype(np.uint64) << np.uint64(63)
    key ^= t
    with np.errstate(over="ignore"):
        m = key * np.uint64(0x9E3779B97F4A7C15)
        mixed = m ^ (m >> np.uint64(32))
        index = np.arange(1, len(ev) + 1, dtype=np.uint64)
        return int(np.sum(index * mixed, dtype=np.uint64))


def row(e):
    return [int(e["t"]), int(e["x"]), int(e["y"]), bool(e["on"])]


FILES = [
    # name, dimensions, writer options
    ("evt2_t0.raw", (640, 480), {"version": "evt2"}),
    ("evt3_t0.raw", (1280, 720), {"version": "evt3"}),
    ("evt3_no_t0.raw", (1280, 720), {"version": "evt3", "zero_t0": False}),
    ("dat2_t0.dat", (304, 240), {"version": "dat2"}),
    ("dat1_t0.dat", (304, 240), {"version": "dat1"}),
]


def main():
    expected = {}
    for k, (name, (w, h), options) in enumerate(FILES):
        written = events(w, h, 3000, seed=k + 1)
        if not options.get("zero_t0", True):
            # Without zero_t0 faery writes timestamps as they are: keep them small.
            written["t"] -= START - 1000
        path = HERE / name
        faery.events_stream_from_array(written, dimensions=(w, h)).to_file(path, **options)
        read = np.concatenate(list(faery.events_stream_from_file(path)))
        assert np.array_equal(read, written), name
        expected[name] = {
            "faery": faery.__version__ if hasattr(faery, "__version__") else "0.7.1",
            "width": w,
            "height": h,
            "events": len(read),
            "on": int(np.count_nonzero(read["on"])),
            "first": [row(e) for e in read[:3]],
            "last": [row(e) for e in read[-3:]],
            "checksum": f"{checksum(read):#018x}",
        }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


main()
