"""Soak benchmark: one long default run, watched from outside.

    .venv/bin/python benchmarks/soak.py --iterations 1000 --out outputs/soak

Runs `rlx-train` (the default config: REPO-R on the expression task, tiny model) for N
iterations in a fresh store, sampling the process's resident memory (VmRSS from /proc, the
process and its children), the MLflow store's size and the artifact/checkpoint folders' size
every second. Afterwards it reads `time/iteration_s` per step back from the store and writes
`soak.csv` (one row per sample) and `soak.md`:
- peak RSS between iterations N/10 and N/5 vs over the last N/10 iterations (growth %);
- store and artifact bytes per iteration over the first and the second half (linear growth:
  the two rates agree);
- median iteration time over the same two windows (drift %).
Run it alone on the machine: a concurrent job changes the timings.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (VmRSS, /proc), 0 once it is gone."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    """Every descendant process id of pid (/proc/<pid>/task/*/children)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


def folder_bytes(path: Path) -> int:
    """Total size of the files under path (0 when it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def latest_step(db: Path) -> int:
    """The highest step of train/entropy in the store (-1 before the first)."""
    import sqlite3

    if not db.exists():
        return -1
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            row = conn.execute("SELECT MAX(step) FROM metrics WHERE key = 'train/entropy'").fetchone()
    except sqlite3.OperationalError:
        return -1
    return -1 if row[0] is None else int(row[0])


def metric(db: Path, key: str) -> dict[int, float]:
    """{step: value} of one metric of the store's run."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT step, value FROM metrics WHERE key = ?", (key,)).fetchall())


def watch(args: list[str], out: Path, env: dict) -> list[dict]:
    """Run the command, sampling memory and disk once a second until it exits."""
    db, samples = out / "mlflow.db", []
    process = subprocess.Popen(args, cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=open(out / "stderr.log", "w"))
    start = time.time()
    while process.poll() is None:
        samples.append({"t_s": round(time.time() - start, 1), "step": latest_step(db), "rss": rss_bytes(process.pid),
                        "store": db.stat().st_size if db.exists() else 0,
                        "artifacts": folder_bytes(out / "artifacts"), "checkpoints": folder_bytes(out / "checkpoints")})
        time.sleep(1.0)
    if process.returncode != 0:
        sys.exit(f"soak run failed (rc {process.returncode}); see {out / 'stderr.log'}")
    return samples


def growth_pct(before: float, after: float) -> float:
    """100 (after - before) / before."""
    return 100.0 * (after - before) / max(before, 1e-12)


def rate(samples: list[dict], key: str, lo: int, hi: int) -> float:
    """Bytes per iteration of `key` between the first samples at steps >= lo and >= hi."""
    first = next(s for s in samples if s["step"] >= lo)
    last = next(s for s in samples if s["step"] >= hi)
    return (last[key] - first[key]) / max(last["step"] - first["step"], 1)


def summarise(samples: list[dict], times: dict[int, float], lengths: dict[int, float],
              n: int) -> list[tuple[str, str, str, str]]:
    """(figure, early, late, change) rows of the soak table. Iteration time also per response
    token (time / train/response_length): the policy's answers change length as it trains."""
    lo, hi, tail = n // 10, n // 5, n // 10  # 1000 iterations: 100-200 against the last 100
    early = [s["rss"] for s in samples if lo <= s["step"] <= hi]
    late = [s["rss"] for s in samples if s["step"] >= n - tail]
    t_early = [v for k, v in times.items() if lo <= k <= hi]
    t_late = [v for k, v in times.items() if k >= n - tail]
    half = n // 2
    window = f"it. {lo}-{hi} vs last {tail}"
    rows = [(f"peak RSS (MiB), {window}", f"{max(early) / 2**20:.1f}", f"{max(late) / 2**20:.1f}",
             f"{growth_pct(max(early), max(late)):+.1f}%"),
            (f"median s/iteration, {window}", f"{statistics.median(t_early):.3f}",
             f"{statistics.median(t_late):.3f}",
             f"{growth_pct(statistics.median(t_early), statistics.median(t_late)):+.1f}%")]
    per_token = {k: v / lengths[k] for k, v in times.items() if lengths.get(k)}
    p_early = statistics.median(v for k, v in per_token.items() if lo <= k <= hi)
    p_late = statistics.median(v for k, v in per_token.items() if k >= n - tail)
    rows.append((f"median s/iteration per response token, {window}", f"{p_early:.4f}", f"{p_late:.4f}",
                 f"{growth_pct(p_early, p_late):+.1f}%"))
    for key in ("store", "artifacts", "checkpoints"):
        a, b = rate(samples, key, 0, half), rate(samples, key, half, n - 1)
        rows.append((f"{key} KiB/iteration, 1st vs 2nd half", f"{a / 1024:.1f}", f"{b / 1024:.1f}",
                     f"{growth_pct(a, b):+.1f}%" if a else "-"))
    final = samples[-1]
    rows.append(("final sizes (MiB): store / artifacts / checkpoints", "",
                 f"{final['store'] / 2**20:.1f} / {final['artifacts'] / 2**20:.1f} / {final['checkpoints'] / 2**20:.1f}",
                 ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("outputs/soak"))
    parser.add_argument("--summarise", action="store_true", help="only rewrite soak.md from --out's soak.csv and store")
    parser.add_argument("overrides", nargs="*", help="extra rlx-train overrides")
    opts = parser.parse_args()
    out = opts.out.resolve()
    if opts.summarise:
        with open(out / "soak.csv") as f:
            samples = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        write_summary(out, samples, opts, "", None)
        return
    out.mkdir(parents=True, exist_ok=False)
    root = Path(__file__).resolve().parent.parent
    args = [sys.executable, "-m", "rlx.train", f"trainer.max_steps={opts.iterations}",
            f"logger.tracking_uri=sqlite:///{out}/mlflow.db", f"logger.artifact_location={out}/artifacts",
            f"checkpoint.dir={out}/checkpoints", f"cache_dir={root}/outputs/cache", *opts.overrides]
    start = time.time()
    samples = watch(args, out, {**os.environ})
    wall = time.time() - start
    with open(out / "soak.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    write_summary(out, samples, opts, args[3], wall)


def write_summary(out: Path, samples: list[dict], opts, max_steps: str, wall: float | None) -> None:
    """soak.md: the summary table of a finished soak run."""
    db = out / "mlflow.db"
    rows = summarise(samples, metric(db, "time/iteration_s"), metric(db, "train/response_length"), opts.iterations)
    table = ["| figure | early | late | change |", "|---|---|---|---|",
             *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]]
    head = f"Soak: `{' '.join(['rlx-train', f'trainer.max_steps={opts.iterations}', *opts.overrides])}`"
    text = head + (f", wall {wall / 60:.1f} min" if wall else "") + "\n\n" + "\n".join(table) + "\n"
    (out / "soak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
