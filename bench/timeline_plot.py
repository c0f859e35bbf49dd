"""Read, summarise and draw one service run's timeline (``service_bench.py --timeline DIR``).

A run's directory holds ``workers/worker-<pid>.jsonl`` (each worker process's gauges every
50 ms, workers/timeline.py), ``bench.jsonl`` (CPU seconds of every worker process, nx-27017,
Redis and the bench, and the broker's per-process unacked messages, every 50 ms) and
``phases.json`` (POST and ``completed`` seen, epoch seconds). Everything is put on 50 ms bins
from the POST.

:func:`analyse` returns the figures the benchmark prints: the busy fraction of both cores,
CPU-ms per image, the phases (POST → first message → scan done → last download →
completed written → completed seen) and, per stall candidate, how much of the window it
covers. :func:`draw` writes the PNG (matplotlib: the ``bench`` extra).

    .venv/bin/python bench/timeline_plot.py /tmp/timeline/fast-run1 [--png out.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

BIN_S = 0.05
CORES = 2


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(run_dir: Path) -> dict[str, Any]:
    """Workers' and bench's samples, on bins of BIN_S from the POST (index 0 = POST)."""
    run_dir = Path(run_dir)
    phases = json.loads((run_dir / "phases.json").read_text())
    post, end = phases["post"], phases["completed_seen"]
    n = int((end - post) / BIN_S) + 1
    workers: dict[int, list[dict[str, Any] | None]] = {}
    marks: dict[str, list[float]] = {}
    for path in sorted((run_dir / "workers").glob("worker-*.jsonl")):
        rows = _jsonl(path)
        if not rows:
            continue
        pid = rows[0]["pid"]
        series: list[dict[str, Any] | None] = [None] * n
        last = None
        k = 0
        for i in range(n):  # the latest sample at or before the bin's end
            t = post + (i + 1) * BIN_S
            while k < len(rows) and rows[k]["t"] <= t:
                last = rows[k]
                k += 1
            series[i] = last
        workers[pid] = series
        final = rows[-1]["marks"]
        for name, (first, latest) in final.items():
            seen = marks.setdefault(name, [first, latest])
            seen[0], seen[1] = min(seen[0], first), max(seen[1], latest)
    bench_rows = _jsonl(run_dir / "bench.jsonl")
    bench: list[dict[str, Any] | None] = [None] * n
    k, last = 0, None
    for i in range(n):
        t = post + (i + 1) * BIN_S
        while k < len(bench_rows) and bench_rows[k]["t"] <= t:
            last = bench_rows[k]
            k += 1
        bench[i] = last
    return {"phases": phases, "n": n, "workers": workers, "marks": marks, "bench": bench,
            "bench_rows": bench_rows}


def _cpu_series(data: dict[str, Any]) -> tuple[dict[str, list[float]], list[float]]:
    """Cores used per bin: per worker pid (by the bench's psutil), and everything together
    (worker tree, nx-27017, Redis, this bench)."""
    bench = data["bench"]
    per: dict[str, list[float]] = {}
    total: list[float] = []
    prev = None
    for row in bench:
        if row is None or prev is None or row is prev:
            total.append(0.0 if prev is None else (total[-1] if total else 0.0))
            for pid in per:
                per[pid].append(per[pid][-1] if per[pid] else 0.0)
            prev = row if row is not None else prev
            continue
        dt = row["t"] - prev["t"]
        all_cpu = 0.0
        for pid, cpu in row["cpu"].items():
            used = (cpu - prev["cpu"].get(pid, cpu)) / dt
            per.setdefault(pid, [0.0] * len(total)).append(used)
            all_cpu += used
        for other in ("nx_cpu", "bench_cpu", "redis_cpu"):
            all_cpu += (row[other] - prev[other]) / dt
        total.append(all_cpu)
        prev = row
    return per, total


def _gauge(data: dict[str, Any], name: str) -> list[int]:
    """A worker gauge summed over the worker processes, per bin."""
    out = [0] * data["n"]
    for series in data["workers"].values():
        for i, row in enumerate(series):
            if row is not None:
                out[i] += row.get(name, 0)
    return out


def analyse(run_dir: Path) -> dict[str, Any]:
    data = load(Path(run_dir))
    phases, marks, n = data["phases"], data["marks"], data["n"]
    post, seen = phases["post"], phases["completed_seen"]
    window = seen - post
    rows = [r for r in data["bench_rows"] if post - BIN_S <= r["t"] <= seen + BIN_S]

    def cpu_total(row: dict[str, Any]) -> float:
        return sum(row["cpu"].values()) + row["nx_cpu"] + row["bench_cpu"] + row["redis_cpu"]

    first, last = rows[0], rows[-1]
    span = last["t"] - first["t"]
    cpu_all = cpu_total(last) - cpu_total(first)
    cpu_workers = sum(last["cpu"].values()) - sum(first["cpu"].values())

    def rel_ms(name: str, which: int = 0) -> float | None:
        return round((marks[name][which] - post) * 1000) if name in marks else None

    last_download = marks.get("download_end", [None, None])[1]
    downloads = _gauge(data, "downloads")
    slot_wait = _gauge(data, "slot_wait")
    attempts = _gauge(data, "attempts")
    messages = _gauge(data, "messages")
    awaiting = _gauge(data, "awaiting")
    finishing = _gauge(data, "finishing")
    opening = _gauge(data, "opening")
    claim = _gauge(data, "claim")
    index = _gauge(data, "index")
    release = _gauge(data, "release")
    status = _gauge(data, "status")
    index_queued = _gauge(data, "index_queued")
    writer = {}
    for pid, series in data["workers"].items():
        rows = [r for r in series if r is not None]
        if rows and "index_writes" in rows[-1]:
            writer[str(pid)] = {k: round(rows[-1][k] - rows[0][k], 3)
                                for k in ("index_writes", "index_entries", "index_write_s")}
    queued = _gauge(data, "pool_queued")
    threads = _gauge(data, "pool_threads")
    per_cpu, total_cpu = _cpu_series(data)
    # The download stretch: first message → last download end, in bins.
    start_i = int(((marks.get("message", [post])[0]) - post) / BIN_S)
    end_i = min(n, int(((last_download or seen) - post) / BIN_S) + 1)
    stretch = range(max(0, start_i), max(start_i + 1, end_i))
    fleet = phases.get("fleet_cap", 64)

    def share(pred) -> float:
        return round(sum(1 for i in stretch if pred(i)) / max(1, len(stretch)), 3)

    idle = [i for i in stretch if total_cpu[i] < 0.9 * CORES]
    # Per process: when did it run out of work (its last bin with an attempt running)?
    ends = {}
    for pid, series in data["workers"].items():
        busy_bins = [i for i, r in enumerate(series) if r is not None and r.get("attempts")]
        ends[str(pid)] = round(busy_bins[-1] * BIN_S * 1000) if busy_bins else None
    mean = (lambda xs: round(statistics.fmean([xs[i] for i in stretch]), 1)
            if len(stretch) else None)
    return {
        "window_s": round(window, 3),
        "busy_fraction": round(cpu_all / (CORES * span), 3) if span else None,
        "busy_fraction_workers": round(cpu_workers / (CORES * span), 3) if span else None,
        "cpu_ms_per_image": round(1000 * cpu_all / max(1, phases["ok"]), 2),
        "cpu_ms_per_image_workers": round(1000 * cpu_workers / max(1, phases["ok"]), 2),
        "phases_ms": {
            "post": 0, "first_message": rel_ms("message"), "scan_done": rel_ms("scan_done"),
            "last_download_end": rel_ms("download_end", 1),
            "job_completed_written": rel_ms("job_completed"),
            "completed_seen": round(window * 1000),
        },
        "process_last_busy_ms": ends,
        "index_writer": writer,
        "download_stretch_means": {
            "downloads_in_flight": mean(downloads), "fleet_cap": fleet,
            "slot_wait": mean(slot_wait), "pool_busy": mean(attempts),
            "pool_threads": mean(threads), "pool_queued": mean(queued),
            "messages_in_process": mean(messages), "awaiting_boundary": mean(awaiting),
            "finishing": mean(finishing), "opening": mean(opening), "claim": mean(claim),
            "index": mean(index), "release": mean(release), "cores_busy": mean(total_cpu),
            "index_queued": mean(index_queued), "status": mean(status),
        },
        "download_stretch_shares": {
            "cores_below_90pct": share(lambda i: total_cpu[i] < 0.9 * CORES),
            "downloads_below_half_fleet_cap": share(lambda i: downloads[i] < fleet / 2),
            "slot_wait_over_quarter_of_pool": share(lambda i: slot_wait[i] > threads[i] / 4),
            "pool_queue_empty": share(lambda i: queued[i] == 0),
        },
        "idle_bins_means": {  # bins of the download stretch with < 90 % of both cores used
            "bins": len(idle),
            "downloads_in_flight": round(statistics.fmean([downloads[i] for i in idle]), 1)
            if idle else None,
            "slot_wait": round(statistics.fmean([slot_wait[i] for i in idle]), 1)
            if idle else None,
            "pool_busy": round(statistics.fmean([attempts[i] for i in idle]), 1)
            if idle else None,
            "pool_queued": round(statistics.fmean([queued[i] for i in idle]), 1)
            if idle else None,
            "index": round(statistics.fmean([index[i] for i in idle]), 1) if idle else None,
            "claim": round(statistics.fmean([claim[i] for i in idle]), 1) if idle else None,
        },
        "load_avg": phases.get("load_avg"),
    }


def draw(run_dir: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    data = load(run_dir)
    phases, marks, n = data["phases"], data["marks"], data["n"]
    post = phases["post"]
    x = [(i + 1) * BIN_S for i in range(n)]
    per_cpu, total_cpu = _cpu_series(data)
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True)
    ax = axes[0]
    for k, (pid, series) in enumerate(sorted(per_cpu.items())):
        if max(series or [0]) > 0.05:
            ax.plot(x[:len(series)], [100 * v for v in series], lw=0.8, label=f"pid {pid}")
    ax.plot(x[:len(total_cpu)], [100 * v for v in total_cpu], color="black", lw=1.2,
            label="all (workers+nx+redis+bench)")
    ax.axhline(100 * CORES, color="grey", ls=":")
    ax.set_ylabel("CPU %")
    ax.legend(fontsize=7, loc="upper right")
    names = [("downloads", "downloads in flight"), ("slot_wait", "waiting for a slot"),
             ("attempts", "pool threads busy"), ("claim", "claiming the URL"),
             ("index", "writing the URL index"), ("release", "releasing the claim"),
             ("status", "reading the job status")]
    for axis, keys in ((axes[1], names),
                       (axes[2], [("messages", "messages in process"),
                                  ("opening", "actors opening folders"),
                                  ("awaiting", "actors awaiting their message's images"),
                                  ("finishing", "actors merging/writing back")]),
                       (axes[3], [("pool_queued", "pool tasks queued"),
                                  ("index_queued", "URL index entries queued")])):
        for pid, series in sorted(data["workers"].items()):
            for key, label in keys:
                axis.plot(x, [r.get(key, 0) if r else 0 for r in series], lw=0.8,
                          label=f"{label} ({pid})")
    axes[1].axhline(phases.get("fleet_cap", 64) / max(1, len(data["workers"])), color="grey",
                    ls=":", label="fleet cap / process")
    axes[1].set_ylabel("threads")
    axes[2].set_ylabel("actor threads")
    by_key: dict[str, list[int]] = {}
    for row in data["bench"]:
        for key, value in ((row or {}).get("acks") or {}).items():
            by_key.setdefault(key, [])
        for key in by_key:
            by_key[key].append(((row or {}).get("acks") or {}).get(key, 0))
    for key, series in by_key.items():
        axes[2].plot(x[:len(series)], series, lw=0.8, ls="--",
                     label=f"taken, unacked {key.split('.')[-2][:8]}")
    axes[2].plot(x, [(r or {}).get("queued", 0) for r in data["bench"]], lw=0.8, color="black",
                 ls="--", label="broker queue length")
    axes[3].set_ylabel("tasks")
    axes[3].set_xlabel("seconds since POST")
    for axis in axes[1:]:
        axis.legend(fontsize=6, loc="upper right", ncol=2)
    for name, color in (("message", "green"), ("scan_done", "blue"), ("download_end", "red"),
                        ("job_completed", "purple")):
        if name in marks:
            at = marks[name][1 if name == "download_end" else 0] - post
            for axis in axes:
                axis.axvline(at, color=color, ls="--", lw=0.8)
            axes[0].text(at, 100 * CORES * 1.02, name, fontsize=7, color=color)
    fig.suptitle(f"{phases.get('config', '')}: {phases['ok']} images in "
                 f"{phases['completed_seen'] - post:.2f} s (load avg {phases.get('load_avg')})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    print(json.dumps(analyse(Path(args.run_dir)), indent=1))
    if args.png:
        draw(Path(args.run_dir), Path(args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
