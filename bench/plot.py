#!/usr/bin/env python3
"""Plot bench/e2e.sh's closed-loop results: p50/p99 latency and throughput vs concurrency.

usage: plot.py RESULTS.jsonl OUT.png   (needs matplotlib; run with the bench venv's python)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
# Of several rounds of one target and concurrency, the best (as in the report).
best = {}
for r in rows:
    if r["kind"] == "closed":
        key = (r["target"], r["c"])
        if key not in best or r["wrk"].get("rps", 0) > best[key]["wrk"].get("rps", 0):
            best[key] = r
closed = list(best.values())
targets = []
for r in closed:
    if r["target"] not in targets:
        targets.append(r["target"])

fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
for t in targets:
    pts = sorted(((r["c"], r["wrk"]) for r in closed if r["target"] == t), key=lambda p: p[0])
    cs = [c for c, _ in pts]
    axes[0].plot(cs, [w["p50_us"] for _, w in pts], marker="o", label=t)
    axes[1].plot(cs, [w["p99_us"] for _, w in pts], marker="o", label=t)
    axes[2].plot(cs, [w["rps"] for _, w in pts], marker="o", label=t)
for ax, title in zip(axes, ["p50 latency (µs)", "p99 latency (µs)", "throughput (req/s)"]):
    ax.set_xscale("log", base=2)
    levels = sorted({r["c"] for r in closed})
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrency (connections)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
axes[0].set_yscale("log")
axes[1].set_yscale("log")
axes[2].set_yscale("log")
axes[0].legend(fontsize=8)
fig.suptitle("tollgate e2e: POST /v1/messages, 2 KB body, zero-latency mock, loopback")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=90)
