"""How long the `medzoo` command takes to answer when it has little to do, and what it imports on the way.

Each command runs N times in a fresh subprocess (the real console script, so interpreter start-up counts, as it
does for a user); the median wall time is printed. Then each runs once more in-process through
`medzoo.cli.main` in a `python -c` subprocess that prints whether torch and hydra ended up in `sys.modules`.

    python bench/cli_startup.py                     # N=5, prints a table
    python bench/cli_startup.py -n 9 --json OUT.json

This is a benchmark, not a test: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {"--help": ["--help"], "zoo list": ["zoo", "list"], "zoo info": ["zoo", "info", "name=breastmnist_resnet18"],
            "data": ["data"]}
PROBE = ("import contextlib, io, sys\n"
         "from medzoo.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
         "    main({argv!r})\n"
         "print('torch' in sys.modules, 'hydra' in sys.modules)")


def medzoo_script() -> str:
    return shutil.which("medzoo", path=str(Path(sys.executable).parent)) or "medzoo"


def wall_times(argv: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], int]:
    """Wall seconds of each run, and the exit status of the last (a failing command is timed too, and said)."""
    times, status = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        status = subprocess.run([medzoo_script(), *argv], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter() - start)
    return times, status


def imported(argv: list[str], env: dict[str, str]) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    return {"torch": out[-2] == "True", "hydra": out[-1] == "True"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    env = {**os.environ, "MEDZOO_OFFLINE": "1"}  # `medzoo data` must never reach the network
    rows = []
    print(f"{'command':<10} {'median s':>9} {'min s':>7} {'max s':>7}  torch  hydra   ({args.runs} runs, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})")
    for name, argv in COMMANDS.items():
        times, status = wall_times(argv, args.runs, env)
        modules = imported(argv, env)
        row = {"command": f"medzoo {name}", "median_s": round(statistics.median(times), 3),
               "min_s": round(min(times), 3), "max_s": round(max(times), 3), "runs": args.runs,
               "imports_torch": modules["torch"], "imports_hydra": modules["hydra"], "exit_status": status}
        rows.append(row)
        print(f"{name:<10} {row['median_s']:>9.3f} {row['min_s']:>7.3f} {row['max_s']:>7.3f}  "
              f"{str(modules['torch']):<6} {str(modules['hydra']):<6}" + (f"  (exit {status})" if status else ""))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cpu_count": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
