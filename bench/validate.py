"""Benchmark: package validation against the speed limit of reading the package.

    .venv/bin/python bench/validate.py [--cases app:50,app:500,text-only:50] [--rounds 5]

Starts its own SeaweedFS (S3) on free ports, builds valid packages (by
default a 50 MiB and a 500 MiB app with a realistic mix of packed bytes: 70%
already-compressed media, 25% deflated code and text, 5% small files; and a
50 MiB text-only package, the worst case for inflating), uploads them, and
then measures, side by side and alternating, each in a fresh process:

- limit: read the object from S3 and sha256 it (what any validation costs
  at the least: every byte has to come from storage and be hashed);
- validate: `validate_package` on the object, exactly as the worker runs it.

It reports wall time (median of the rounds), throughput, the ratio
validate/limit, and the peak RSS (VmHWM) of each process, writes
bench/results/validate.json and removes everything it created.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform.config import MiB, Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "validate.json"
ACCESS, SECRET, BUCKET = "bench", "bench-secret-key", "bench"
PACKAGE_ID = "com.bench.app"
TARGET_RATIO, TARGET_RSS_MIB = 1.5, 100


# -- building packages -------------------------------------------------------------

def _text_block(seed: int, size: int) -> bytes:
    """Word-like text that deflates about 2:1, like minified code."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz_{}():;.,") for _ in range(rnd.randint(2, 10)))
             for _ in range(5000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rnd.choices(words, k=8192)) + b"\n"
    return bytes(out[:size])


# Shares of the packed bytes: media (already compressed: textures, audio,
# video), code and text (deflates about 2:1), small files (icons, strings).
MIXES = {
    "app": {"media": 0.70, "text": 0.25, "small": 0.05},
    "text-only": {"media": 0.0, "text": 1.0, "small": 0.0},
}


def build_package(path: Path, size: int, shares: dict[str, float]) -> dict:
    """A package of about `size` bytes whose packed bytes follow `shares`."""
    texts = [_text_block(seed, 8 * MiB) for seed in range(3)]
    rnd = random.Random(size)
    packed = {kind: 0 for kind in shares}
    mix = {"media": 0, "text_unpacked": 0, "entries": 0}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps({
            "package_id": PACKAGE_ID, "version_code": 1, "version_name": "1.0", "name": "Bench"}))
        n = 0
        while (written := z.fp.tell()) < size:
            n += 1
            # Add to the kind furthest below its share.
            kind = min(shares, key=lambda k: packed[k] - shares[k] * written if shares[k] else 1e30)
            if kind == "media":  # half stored (as aapt and zip -n do), half deflated anyway
                data = os.urandom(rnd.randint(1, 6) * MiB)
                z.writestr(f"media/{n}.bin", data, compress_type=(
                    zipfile.ZIP_STORED if n % 2 else zipfile.ZIP_DEFLATED))
                mix["media"] += len(data)
            elif kind == "text":
                block = texts[n % 3]
                start = rnd.randrange(0, len(block) // 2)
                data = block[start:start + rnd.randint(1, 4) * MiB]
                z.writestr(f"code/{n}.js", data)
                mix["text_unpacked"] += len(data)
            else:
                for i in range(100):
                    at = rnd.randrange(0, len(texts[0]) // 2)
                    z.writestr(f"res/{n}/{i}.json", texts[0][at:at + rnd.randint(1000, 64000)])
            packed[kind] += z.fp.tell() - written
        mix["entries"] = len(z.infolist())
    mix["packed_shares"] = {k: round(v / path.stat().st_size, 2) for k, v in packed.items()}
    return mix


# -- the measured operations (each in a fresh process) --------------------------------

def _storage(endpoint: str):
    from app.platform.storage import Storage

    return Storage(Settings(s3_endpoint=endpoint, s3_access_key=ACCESS, s3_secret_key=SECRET,
                            bucket=BUCKET, public_url=endpoint))


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_wait() -> float:
    """Seconds this thread has been ready to run but waiting for a free CPU."""
    return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9


def child(mode: str, endpoint: str, key: str) -> None:
    from mosis_format.validation import STREAM_CHUNK, Expected, validate_package

    storage = _storage(endpoint)
    size = storage.stat(key).size
    baseline = _vm("VmRSS")
    cpu = time.process_time()
    waited = _cpu_wait()
    started = time.perf_counter()
    if mode == "limit":
        digest = hashlib.sha256()
        for chunk in storage.stream(key, chunk=STREAM_CHUNK):
            digest.update(chunk)
        result = digest.hexdigest()
    else:
        report = validate_package(size, lambda o, n: storage.read_range(key, o, n),
                                  storage.stream(key, chunk=STREAM_CHUNK), Expected(PACKAGE_ID, 1),
                                  Settings().limits)
        result = report.sha256
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
                      "cpu_wait_seconds": _cpu_wait() - waited, "sha256": result,
                      "peak_rss": _vm("VmHWM"), "baseline_rss": baseline}))


def cpu_of(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(mode: str, endpoint: str, key: str, storage_pid: int) -> dict:
    storage_cpu = cpu_of(storage_pid)
    out = subprocess.run([sys.executable, __file__, "--child", mode, endpoint, key],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the {mode} process failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["storage_cpu_seconds"] = cpu_of(storage_pid) - storage_cpu
    return result


# -- the run -------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="app:50,app:500,text-only:50",
                        help="MIX:MiB,... (mixes: " + ", ".join(MIXES) + ")")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "ENDPOINT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from app.native import WeedPorts, start_weed

    work = Path(tempfile.mkdtemp(prefix="mosis-bench-validate-"))
    ports = WeedPorts.free()
    weed = start_weed(work / "s3", ACCESS, SECRET, ports, work / "logs")
    results = []
    storage = None
    try:
        weed.wait_ready(90)
        endpoint = f"http://127.0.0.1:{ports.s3}"
        storage = _storage(endpoint)
        storage.ensure_bucket()
        for name, mib in (c.split(":") for c in args.cases.split(",")):
            mib = int(mib)
            path = work / f"bench-{name}-{mib}.mosis"
            t = time.perf_counter()
            mix = build_package(path, mib * MiB, MIXES[name])
            size = path.stat().st_size
            print(f"built {path.name}: {size / MiB:.1f} MiB, {mix['entries']} entries, packed "
                  f"shares {mix['packed_shares']}, in {time.perf_counter() - t:.1f}s", flush=True)
            key = f"bench/{name}-{mib}/package.mosis"
            storage.client.fput_object(BUCKET, key, str(path))
            expected = hashlib.sha256(path.read_bytes()).hexdigest()
            path.unlink()
            runs = {"limit": [], "validate": []}
            for _ in range(args.rounds):
                for mode in ("limit", "validate"):
                    r = run_child(mode, endpoint, key, weed.proc.pid)
                    assert r["sha256"] == expected, (mode, r)
                    runs[mode].append(r)
            storage.delete(key)
            row = summarise(name, size, mix, runs)
            results.append(row)
            print(f"  limit (S3 read + sha256): {row['limit_seconds']:.2f}s "
                  f"({row['limit_mib_s']:.0f} MiB/s), peak RSS {row['limit_peak_rss_mib']:.0f} MiB")
            print(f"  validate:                 {row['validate_seconds']:.2f}s "
                  f"({row['validate_mib_s']:.0f} MiB/s), peak RSS {row['validate_peak_rss_mib']:.0f} MiB")
            print(f"  ratio validate/limit: {row['ratio']:.2f} (target <= {TARGET_RATIO}); CPU "
                  f"seconds: limit {row['limit_cpu_seconds']:.2f}, validate "
                  f"{row['validate_cpu_seconds']:.2f}, S3 server {row['storage_cpu_seconds']:.2f}; "
                  f"waiting for a CPU: limit {row['limit_cpu_wait_seconds']:.2f}, validate "
                  f"{row['validate_cpu_wait_seconds']:.2f}; load average {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} CPUs", flush=True)
    finally:
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "benchmark": "bench/validate.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_average_after": os.getloadavg()},
        "rounds": args.rounds,
        "targets": {"ratio": TARGET_RATIO, "peak_rss_mib_for_500_mib": TARGET_RSS_MIB},
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def summarise(name: str, size: int, mix: dict, runs: dict) -> dict:
    limit = statistics.median(r["seconds"] for r in runs["limit"])
    ours = statistics.median(r["seconds"] for r in runs["validate"])
    return {
        "mix": name,
        "package_mib": round(size / MiB, 1),
        "entries": mix["entries"],
        "packed_shares": mix["packed_shares"],
        "text_unpacked_mib": round(mix["text_unpacked"] / MiB, 1),
        "media_mib": round(mix["media"] / MiB, 1),
        "limit_seconds": round(limit, 3),
        "validate_seconds": round(ours, 3),
        "limit_mib_s": round(size / MiB / limit, 1),
        "validate_mib_s": round(size / MiB / ours, 1),
        "ratio": round(ours / limit, 2),
        # CPU seconds of the measured process, and of the S3 server meanwhile:
        # on a busy machine wall time follows the CPU that is needed.
        "limit_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs["limit"]), 3),
        "validate_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs["validate"]), 3),
        "storage_cpu_seconds": round(statistics.median(r["storage_cpu_seconds"] for r in runs["limit"]), 3),
        # How long the measuring thread (in validation: the inflating one) was
        # ready to run but had no CPU: the machine's load, not our code.
        "limit_cpu_wait_seconds": round(statistics.median(r["cpu_wait_seconds"] for r in runs["limit"]), 3),
        "validate_cpu_wait_seconds": round(statistics.median(r["cpu_wait_seconds"] for r in runs["validate"]), 3),
        "limit_peak_rss_mib": round(max(r["peak_rss"] for r in runs["limit"]) / MiB, 1),
        "validate_peak_rss_mib": round(max(r["peak_rss"] for r in runs["validate"]) / MiB, 1),
        "validate_baseline_rss_mib": round(max(r["baseline_rss"] for r in runs["validate"]) / MiB, 1),
        "all_seconds": {mode: [round(r["seconds"], 3) for r in rs] for mode, rs in runs.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
