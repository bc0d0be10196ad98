#!/usr/bin/env python3
"""Runs a command, its stdout into a file, and prints its peak resident memory split the way Linux
counts it: anonymous (heap, tensors) and file-backed (the model's memory map and the libraries).
The kernel keeps no high-water mark per kind, so both are sampled every 20 ms (short spikes can be
missed; the total's exact peak is the command's own VmHWM, e.g. compress --json's peak_rss_mb).
Usage: rss_split.py OUT -- command [args...]"""
import subprocess
import sys
import time


def sample(pid):
    anon = files = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith("RssFile:"):
                    files = int(line.split()[1])
    except OSError:
        pass
    return anon, files


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    with open(sys.argv[1], "w") as out:
        proc = subprocess.Popen(sys.argv[3:], stdout=out)
        peak_anon = peak_file = peak_total = 0
        at_peak = (0, 0)
        while proc.poll() is None:
            anon, files = sample(proc.pid)
            peak_anon, peak_file = max(peak_anon, anon), max(peak_file, files)
            if anon + files > peak_total:
                peak_total, at_peak = anon + files, (anon, files)
            time.sleep(0.02)
    print(f"    sampled peaks: heap {peak_anon / 1024:.0f} MiB, mapped files {peak_file / 1024:.0f} MiB; "
          f"at the highest total {at_peak[0] / 1024:.0f} + {at_peak[1] / 1024:.0f} MiB")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
