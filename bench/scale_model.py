#!/usr/bin/env python3
"""Cost model of a compression run (issue 20), fitted on bench/scale.sh's measurements and projected
onto Llama-2-7B and Llama-2-70B on one machine like the measuring one and on N of them (MPI ranks).

Per method, from the measured per-group times (group_seconds) and the groups' shapes:
  RTN, k-means VQ, PocketLLM   time per group = a * weights           (fixed K, d, iterations, epochs)
  GPTQ                         time per group = a * rows * cols^2      (the column sweep with its Hessian)
  calibration (GPTQ)           rank 0, block by block: (calibration + hessians) seconds per block
                               parameter and calibration token, projected at 128 windows x 2048 tokens
  writing                      rank 0: seconds per parameter of the whole model
N machines: groups without calibration are one wave; each wave's groups go longest first to the
least loaded machine (LPT), so the time is at least the slowest group. With calibration, the waves
are the blocks: per block, rank 0's calibration pass, then that block's 7 groups over the machines.
Not modelled: the network and shared filesystem (each finished group is one file write), model
loading per rank, and memory limits (printed: the largest group's fp32 weights, and its Hessian).
Usage: scale_model.py scale-<method>.json ... [--machines 64] [--calib-tokens 262144]"""
import argparse
import heapq
import json
import os

SHAPES = {
    "Llama-2-7B": dict(blocks=32, params=6.74e9, matrices=[("q", 4096, 4096), ("k", 4096, 4096), ("v", 4096, 4096), ("o", 4096, 4096),
                                                           ("gate", 11008, 4096), ("up", 11008, 4096), ("down", 4096, 11008)]),
    "Llama-2-70B": dict(blocks=80, params=68.98e9, matrices=[("q", 8192, 8192), ("k", 1024, 8192), ("v", 1024, 8192), ("o", 8192, 8192),
                                                             ("gate", 28672, 8192), ("up", 28672, 8192), ("down", 8192, 28672)]),
}


def cost(method, rows, cols):
    return rows * cols * cols if method == "gptq" else rows * cols


def lpt(times, machines):
    loads = [0.0] * min(machines, max(1, len(times)))
    heapq.heapify(loads)
    for t in sorted(times, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + t)
    return max(loads) if times else 0.0


def fit(run):
    method = run["method"]
    groups, order = {}, []
    for m in run["matrices"]:
        if m["group"] not in groups:
            groups[m["group"]] = []
            order.append(m["group"])
        groups[m["group"]].append((m["rows"], m["cols"]))
    secs = run.get("group_seconds") or []
    total_cost = sum(cost(method, r, c) for g in order for r, c in groups[g])
    total_time = sum(secs) if secs else run["seconds"]
    phases = {p["phase"]: p["seconds"] for p in run["phases"]}
    blocks = len({m["name"].split(".")[2] for m in run["matrices"]})
    block_params = sum(r * c for g in order for r, c in groups[g]) / max(1, blocks)
    calib = phases.get("calibration", 0.0) + phases.get("hessians", 0.0)
    return dict(method=method, a=total_time / total_cost, calib_per_param_token=calib / max(1, blocks * block_params * run["calib_tokens"])
                if calib > 0 else 0.0, write_per_param=phases.get("writing", 0.0) / run["model_params"],
                measured=dict(groups=len(order), seconds=run["seconds"], rss=run["peak_rss_mb"]))


def project(f, shape, machines, calib_tokens):
    per_block = [f["a"] * cost(f["method"], r, c) for _, r, c in shape["matrices"]]
    write = f["write_per_param"] * shape["params"]
    block_params = sum(r * c for _, r, c in shape["matrices"])
    calib = f["calib_per_param_token"] * block_params * calib_tokens
    if calib > 0:  # block by block
        return shape["blocks"] * (calib + lpt(per_block, machines)) + write
    return lpt(per_block * shape["blocks"], machines) + write


def human(s):
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--machines", type=int, default=64)
    ap.add_argument("--calib-tokens", type=int, default=128 * 2048)
    ap.add_argument("--model-params", type=float, default=0.0, help="parameters of the measured model (default: from its config)")
    args = ap.parse_args()
    print(f"{'method':10s} {'measured':>22s}  " + "  ".join(f"{n + ' x1':>14s} {n + ' x' + str(args.machines):>14s}" for n in SHAPES))
    for path in args.runs:
        run = json.load(open(path))
        config = json.load(open(os.path.join(run["model"], "config.json"))) if os.path.isdir(run["model"]) else {}
        h, i, L, v = config.get("hidden_size", 2048), config.get("intermediate_size", 5632), config.get("num_hidden_layers", 8), config.get("vocab_size", 32000)
        kv = h * config.get("num_key_value_heads", 4) // config.get("num_attention_heads", 16)
        run["model_params"] = args.model_params or (L * (2 * h * h + 2 * h * kv + 3 * h * i) + 2 * v * h)
        run["calib_tokens"] = run.get("calib_tokens", 16 * 256)
        f = fit(run)
        cells = []
        for shape in SHAPES.values():
            cells.append(f"{human(project(f, shape, 1, args.calib_tokens)):>14s} {human(project(f, shape, args.machines, args.calib_tokens)):>14s}")
        m = f["measured"]
        print(f"{f['method']:10s} {m['groups']:3d} groups {m['seconds']:8.1f} s  " + "  ".join(cells))
    print(f"(one machine = the measuring one; GPTQ's calibration projected at {args.calib_tokens} tokens; "
          "largest group, fp32: 7B 180 MB + Hessian 485 MB; 70B 940 MB + Hessian 3.3 GB)")


if __name__ == "__main__":
    main()
