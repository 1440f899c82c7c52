#!/usr/bin/python3
"""Draws the benchmark chart from zpbench's samples.csv (plotting only; the harness is Swift).

Left: median cold start and restore -> first correct response per workload and runtime.
Right: restore -> first response (and CRIU's own restore time) against checkpoint image size.
Usage: plot.py SAMPLES_CSV OUTPUT_PNG
"""
import csv
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(samples_path: str, out_path: str) -> None:
    with open(samples_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{samples_path}: no samples")

    def num(row, key):
        v = row.get(key, "")
        return float(v) if v not in ("", None) else None

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    series = defaultdict(list)  # (label, workload) -> values
    for r in rows:
        if r["runtime"] == "runc" and num(r, "cold_start_ms") is not None:
            series[("cold start → 1st response", r["workload"])].append(num(r, "cold_start_ms"))
        if num(r, "restore_first_response_ms") is not None:
            series[(f"{r['runtime']} restore → 1st response", r["workload"])].append(num(r, "restore_first_response_ms"))
    labels = list(dict.fromkeys(k[0] for k in series))

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(workloads))]
        ys = [statistics.median(series[(label, w)]) if series[(label, w)] else 0 for w in workloads]
        bars = left.bar(xs, ys, width, label=label)
        for b, y in zip(bars, ys):
            if y:
                left.annotate(f"{y:.0f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom", fontsize=7)
    left.set_xticks(range(len(workloads)))
    left.set_xticklabels([w.replace("+", "+\n") for w in workloads], fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("milliseconds (median, log scale)")
    left.set_title("Cold start vs restore → first correct response")
    left.legend(fontsize=8)

    markers = {"runc": "o"}
    for rt in runtimes:
        pts = [(num(r, "image_kib") / 1024, num(r, "restore_first_response_ms"), r["workload"])
               for r in rows if r["runtime"] == rt and num(r, "image_kib") is not None
               and num(r, "restore_first_response_ms") is not None]
        if pts:
            right.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(rt, "^"),
                          label=f"{rt} restore → 1st response")
        crit = [(num(r, "image_kib") / 1024, num(r, "criu_restore_ms")) for r in rows
                if r["runtime"] == rt and num(r, "image_kib") is not None and num(r, "criu_restore_ms") is not None]
        if crit:
            right.scatter([p[0] for p in crit], [p[1] for p in crit], marker="x",
                          label=f"CRIU restore_time ({rt})")
    for w in workloads:
        sizes = [num(r, "image_kib") / 1024 for r in rows if r["workload"] == w and num(r, "image_kib") is not None]
        times = [num(r, "restore_first_response_ms") for r in rows
                 if r["workload"] == w and r["runtime"] == "runc" and num(r, "restore_first_response_ms") is not None]
        if sizes and times:
            right.annotate(w, (statistics.median(sizes), max(times)), textcoords="offset points", xytext=(4, 6),
                           fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("checkpoint image size (MiB, du)")
    right.set_ylabel("milliseconds")
    right.set_title("Restore time vs image size")
    right.legend(fontsize=8)
    right.set_ylim(bottom=0)

    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
