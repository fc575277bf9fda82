"""This tree's TensorNet speed against another commit's, measured side by side in one run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/compare_commits.py --baseline REV \
        --json benchmarks/results/compare_commits.json

The baseline commit is checked out into a temporary git worktree beside this one. One
worker process per tree (``commit_worker.py``) builds the same model (the benchmark's
TensorNet, seed 0) and the same graphs; the coordinator alternates single calls between
the two workers (baseline, this tree, baseline, ...), so both see the same machine state,
after ``--warmup`` calls each. Only one worker runs at a time, on ``--threads`` threads.
Reported per row: the median time of each tree, the ratio this/baseline, and a 95%
bootstrap interval of that ratio of medians (the noise: a row is slower than before only
if its interval lies above 1).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "commit_worker.py"
LABELS = ["3BPA, 27 atoms", "water box, 192 atoms, PBC", "32 x 3BPA, 864 atoms"]


class Worker:
    def __init__(self, tree: Path, threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        self.process = subprocess.Popen([sys.executable, str(WORKER), str(tree)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=str(tree))

    def ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with code {self.process.wait()}")
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def ratio_interval(base: list[float], new: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    ratios = sorted(statistics.median(rng.choices(new, k=len(new))) / statistics.median(rng.choices(base, k=len(base)))
                    for _ in range(draws))
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--systems", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--kinds", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    here = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="molsym-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            workers = {"baseline": Worker(tree, args.threads), "this": Worker(ROOT, args.threads)}
            for kind in args.kinds:
                for dtype in args.dtypes:
                    for system in args.systems:
                        setup = {name: w.ask({"setup": [system, dtype, kind]})["ready"] for name, w in workers.items()}
                        for w in workers.values():
                            w.ask({"call": args.warmup})
                        times = {name: [] for name in workers}
                        for _ in range(args.repeats):
                            for name, w in workers.items():
                                times[name] += w.ask({"call": 1})["times"]
                        base, new = (statistics.median(times[n]) for n in ("baseline", "this"))
                        low, high = ratio_interval(times["baseline"], times["this"])
                        row = {"system": LABELS[system], "dtype": dtype, "kind": kind, "baseline_ms": 1e3 * base,
                               "this_ms": 1e3 * new, "ratio": new / base, "ratio_95": [low, high],
                               "setup_s": setup}
                        rows.append(row)
                        print(f"{kind:9s} {dtype} {LABELS[system]:28s} baseline {1e3 * base:8.2f} ms  "
                              f"this {1e3 * new:8.2f} ms  ratio {new / base:.3f} [{low:.3f}, {high:.3f}]", flush=True)
            for w in workers.values():
                w.close()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    print()
    print(f"| system | dtype | path | {commit} ms | {here} ms | ratio | 95% interval |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['system']} | {r['dtype']} | {r['kind']} | {r['baseline_ms']:.1f} | {r['this_ms']:.1f} | "
              f"{r['ratio']:.3f} | {r['ratio_95'][0]:.3f}-{r['ratio_95'][1]:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"baseline": commit, "this": here, "threads": args.threads,
                                         "repeats": args.repeats, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
