"""Benchmark: delta patches between package versions, ours against the
whole-file tools and the full download.

    .venv/bin/python bench/deltas.py [--packages numpy,click] [--synthetic-mib 20] [--big-mib 500]

Corpus, fetched or built at run time and never committed:

- wheels: four consecutive releases of widely used Python packages (pure
  Python and binary, small to large), fetched with
  `pip download --no-deps --only-binary=:all:` into bench/work/wheels;
- synthetic app packages (code, text, already-compressed media, half of the
  media stored) with 1%, 10% and 50% of the entries changed;
- one large synthetic package (500 MiB) with 10% changed, for the apply
  memory target (its whole-file peers are not run: bsdiff4 would need about
  17 times the package in memory).

For every pair, side by side in one run, each step in a fresh process whose
peak RSS (VmHWM) and time are measured: our patch (mosis_format.delta),
whole-file bsdiff4, whole-file zstd --patch-from (level 19, long-distance
matching, window covering the old file), and the full package. Every patch
is applied and the result's sha256 checked. Writes bench/results/deltas.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.delta_packages import app_members, evolve, write_zip  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "deltas.json"
WORK = ROOT / "bench" / "work"
MiB = 1024 * 1024
TARGETS = {"wheel_mean_ratio": 0.35, "total_vs_best_peer": 0.5, "generate_s_per_100_mib": 30,
           "apply_rss_mib_500_mib": 100}
# (name, four or more consecutive releases with wheels for CPython 3.11 on
# x86-64 Linux): pure Python and binary, 60 KiB to 16 MiB.
WHEELS = [
    ("requests", ["2.32.0", "2.32.1", "2.32.2", "2.32.3"]),
    ("click", ["8.1.4", "8.1.5", "8.1.6", "8.1.7"]),
    ("urllib3", ["2.2.0", "2.2.1", "2.2.2", "2.2.3"]),
    ("rich", ["13.7.0", "13.7.1", "13.8.0", "13.8.1"]),
    ("pip", ["24.0", "24.1", "24.1.1", "24.1.2"]),
    ("setuptools", ["75.1.0", "75.2.0", "75.3.0", "75.4.0"]),
    ("django", ["5.0.6", "5.0.7", "5.0.8", "5.0.9"]),
    ("botocore", ["1.35.0", "1.35.1", "1.35.2", "1.35.3"]),
    ("psutil", ["5.9.8", "6.0.0", "6.1.0", "6.1.1"]),
    ("charset-normalizer", ["3.3.0", "3.3.1", "3.3.2", "3.4.0"]),
    ("sqlalchemy", ["2.0.32", "2.0.33", "2.0.34", "2.0.35"]),
    ("pydantic-core", ["2.23.1", "2.23.2", "2.23.3", "2.23.4"]),
    ("pillow", ["10.3.0", "10.4.0", "11.0.0", "11.1.0"]),
    ("cryptography", ["43.0.0", "43.0.1", "43.0.3", "44.0.0"]),
    ("numpy", ["2.1.0", "2.1.1", "2.1.2", "2.1.3"]),
]
TOOLS = ("ours", "bsdiff4", "zstd")


# -- one step in a fresh process ------------------------------------------------------

def child(tool: str, op: str, a: str, b: str, c: str) -> None:
    """Run one step and print {seconds, peak_rss_mib, stats?} as JSON."""
    stats = None
    if tool == "ours":
        from mosis_format.delta import apply
        from mosis_format.delta.generator import generate
        t0 = time.perf_counter()
        if op == "generate":
            stats = generate(a, b, c).stats
        else:
            apply(a, b, c)
    elif tool == "bsdiff4":
        import bsdiff4
        t0 = time.perf_counter()
        if op == "generate":
            bsdiff4.file_diff(a, b, c)  # old, new, patch
        else:
            bsdiff4.file_patch(a, c, b)  # old, out, patch
    else:
        from mosis_format.delta import zstd
        old = Path(a).read_bytes()
        t0 = time.perf_counter()
        log = max(10, min(31, (2 * len(old)).bit_length()))
        if op == "generate":
            new = Path(b).read_bytes()
            Path(c).write_bytes(zstd.compress(new, 19, max(log, (len(old) + len(new)).bit_length()), old, long=True))
        else:
            d = zstd.ZstdDecompressor(zstd_dict=zstd.ZstdDict(old, is_raw=True).as_prefix,
                                      options={zstd.DecompressionParameter.window_log_max: 31})
            Path(c).write_bytes(d.decompress(Path(b).read_bytes()))
    seconds = time.perf_counter() - t0
    hwm = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mib": round(hwm / 1024, 1), "stats": stats}))


def step(tool: str, op: str, a: Path, b: Path, c: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", tool, op, str(a), str(b), str(c)],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"{tool} {op} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(MiB):
            digest.update(data)
    return digest.hexdigest()


def measure(group: str, name: str, old: Path, new: Path, work: Path, tools=TOOLS) -> dict:
    full = new.stat().st_size
    want = sha256(new)
    row = {"group": group, "pair": name, "full_bytes": full, "full_mib": round(full / MiB, 2)}
    for tool in tools:
        patch, out = work / f"{tool}.patch", work / f"{tool}.out"
        gen = step(tool, "generate", old, new, patch)
        app = step(tool, "apply", old, patch, out)
        ok = sha256(out) == want
        if not ok:
            raise RuntimeError(f"{tool} did not re-create {name}")
        size = patch.stat().st_size
        row[tool] = {"bytes": size, "ratio": round(size / full, 4),
                     "generate_s": gen["seconds"], "generate_rss_mib": gen["peak_rss_mib"],
                     "generate_s_per_100_mib": round(gen["seconds"] / (full / MiB) * 100, 1),
                     "apply_s": app["seconds"], "apply_rss_mib": app["peak_rss_mib"]}
        if gen["stats"]:
            row[tool]["stats"] = gen["stats"]
        patch.unlink()
        out.unlink()
    print(_line(row), flush=True)
    return row


def _line(row: dict) -> str:
    parts = [f"{row['group']:9} {row['pair']:34} {row['full_mib']:8.2f} MiB"]
    for tool in TOOLS:
        if tool in row:
            r = row[tool]
            parts.append(f"{tool} {r['ratio']:.3f} ({r['generate_s']:.1f}s/{r['generate_rss_mib']:.0f}M, "
                         f"apply {r['apply_s']:.1f}s/{r['apply_rss_mib']:.0f}M)")
    return "  ".join(parts)


# -- corpus ---------------------------------------------------------------------------

def fetch(cache: Path, name: str, version: str) -> Path:
    prefix = f"{name.replace('-', '_')}-{version}-".lower()
    found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix)]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--disable-pip-version-check", "-d", str(cache),
                        f"{name}=={version}"], check=True, timeout=600)
        found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix)]
    return found[0]


def synthetic(work: Path, mib: int, share: float, seed: int) -> tuple[Path, Path]:
    """An app package of about `mib` MiB and its next version."""
    entries = max(40, int(mib * 1024 * 1024 / 55_000))  # an entry averages ~55 KB
    scale = 1
    while entries > 1500:
        entries, scale = entries // 2, scale * 2
    old = app_members(seed, entries=entries, scale=scale)
    tag = f"{mib}-{share}-{seed}"
    return (write_zip(work / f"syn-{tag}-v1.zip", old),
            write_zip(work / f"syn-{tag}-v2.zip", evolve(old, share, seed + 1)))


# -- aggregate ------------------------------------------------------------------------

def aggregate(rows: list[dict]) -> dict:
    out = {"pairs": len(rows), "full_bytes": sum(r["full_bytes"] for r in rows)}
    for tool in TOOLS:
        have = [r for r in rows if tool in r]
        if not have:
            continue
        ratios = [r[tool]["ratio"] for r in have]
        total_mib = sum(r["full_bytes"] for r in have) / MiB
        out[tool] = {
            "bytes": sum(r[tool]["bytes"] for r in have),
            "mean_ratio": round(statistics.mean(ratios), 4),
            "median_ratio": round(statistics.median(ratios), 4),
            "total_ratio": round(sum(r[tool]["bytes"] for r in have) / sum(r["full_bytes"] for r in have), 4),
            "generate_s": round(sum(r[tool]["generate_s"] for r in have), 2),
            "generate_s_per_100_mib": round(sum(r[tool]["generate_s"] for r in have) / total_mib * 100, 1),
            "generate_s_per_100_mib_worst": max(r[tool]["generate_s_per_100_mib"] for r in have),
            "generate_rss_mib_max": max(r[tool]["generate_rss_mib"] for r in have),
            "apply_s": round(sum(r[tool]["apply_s"] for r in have), 2),
            "apply_rss_mib_max": max(r[tool]["apply_rss_mib"] for r in have),
        }
    peers = [out[t]["bytes"] for t in ("bsdiff4", "zstd") if t in out]
    if "ours" in out and peers:
        out["ours_vs_best_peer_bytes"] = round(out["ours"]["bytes"] / min(peers), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", help="comma-separated subset of the wheel corpus")
    parser.add_argument("--synthetic-mib", type=int, default=20, help="size of the synthetic app packages")
    parser.add_argument("--big-mib", type=int, default=500, help="the large package (0: skip)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    work = WORK / f"deltas-{os.getpid()}"
    cache = WORK / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True)
    started = time.time()
    rows: list[dict] = []
    try:
        chosen = set(args.packages.split(",")) if args.packages else None
        for name, versions in WHEELS:
            if chosen and name not in chosen:
                continue
            files = [fetch(cache, name, v) for v in versions]
            for (va, a), (vb, b) in zip(zip(versions, files), zip(versions[1:], files[1:])):
                rows.append(measure("wheels", f"{name} {va} -> {vb}", a, b, work))
        for i, share in enumerate((0.01, 0.1, 0.5)):
            a, b = synthetic(work, args.synthetic_mib, share, seed=100 + i)
            rows.append(measure("synthetic", f"app {args.synthetic_mib} MiB, {share:.0%} changed", a, b, work))
        big = None
        if args.big_mib:
            a, b = synthetic(work, args.big_mib, 0.1, seed=200)
            big = measure("big", f"app {args.big_mib} MiB, 10% changed", a, b, work, tools=("ours",))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    groups = {g: aggregate([r for r in rows if r["group"] == g]) for g in ("wheels", "synthetic")}
    wheels = groups["wheels"]
    everything = aggregate(rows + ([big] if big else []))
    verdict = {}
    if "ours" in wheels:
        verdict["wheel_mean_ratio"] = {"measured": wheels["ours"]["mean_ratio"], "target": TARGETS["wheel_mean_ratio"],
                                       "met": wheels["ours"]["mean_ratio"] <= TARGETS["wheel_mean_ratio"]}
        verdict["total_vs_best_peer"] = {"measured": wheels.get("ours_vs_best_peer_bytes"),
                                         "target": TARGETS["total_vs_best_peer"],
                                         "met": (wheels.get("ours_vs_best_peer_bytes") or 9) <= TARGETS["total_vs_best_peer"]}
    verdict["generate_s_per_100_mib"] = {"measured": everything["ours"]["generate_s_per_100_mib"],
                                         "worst_pair": everything["ours"]["generate_s_per_100_mib_worst"],
                                         "target": TARGETS["generate_s_per_100_mib"],
                                         "met": everything["ours"]["generate_s_per_100_mib"] <= TARGETS["generate_s_per_100_mib"]}
    if big:
        verdict["apply_rss_mib_500_mib"] = {"measured": big["ours"]["apply_rss_mib"], "package_mib": big["full_mib"],
                                            "target": TARGETS["apply_rss_mib_500_mib"],
                                            "met": big["ours"]["apply_rss_mib"] < TARGETS["apply_rss_mib_500_mib"]}
    result = {
        "benchmark": "bench/deltas.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_average_after": os.getloadavg()},
        "targets": TARGETS,
        "verdict": verdict,
        "aggregate": {**groups, "all_pairs": everything},
        "big": big,
        "pairs": rows,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"verdict": verdict, "wheels": wheels, "synthetic": groups["synthetic"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
