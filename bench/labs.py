"""Run the labs in docs/labs/ top to bottom in full mode (or quick mode) and print each one's wall time and the
figures its last cell reports (`LAB RESULTS {...}`). These are the times and figures written in each lab and in
docs/labs/README.md.

    python bench/labs.py                       # every lab, full mode
    python bench/labs.py 01 03 --quick         # some labs, quick mode (what the tests run)
    python bench/labs.py 03 04 -p SEED=1       # another seed

Each lab gets an empty MEDZOO_HOME, so its time includes decoding the data once, as a student's first run does.
Data: labs that need data read MEDZOO_DATA (a folder holding brain-tumor-mri/, medmnist/, ...). The executed
notebooks go to --out (default: a temporary folder); they are not meant to be committed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

LABS = Path(__file__).resolve().parents[1] / "docs" / "labs"


def lab_results(notebook: Path) -> dict | None:
    """The JSON after `LAB RESULTS` in the executed notebook's outputs."""
    text = notebook.read_text()
    found = re.search(r"LAB RESULTS (\{.*?\})\\n", text)
    return json.loads(found.group(1).replace('\\"', '"')) if found else None


def parse_param(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labs", nargs="*", help="lab numbers (01, 02, ...); default all")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="another parameter for every lab, e.g. -p SEED=1 (a number, true/false or text)")
    args = parser.parse_args()
    import papermill

    out = Path(args.out or tempfile.mkdtemp(prefix="medzoo-labs-"))
    notebooks = sorted(p for p in LABS.glob("[0-9][0-9]_*.ipynb") if not args.labs or p.name[:2] in args.labs)
    print(f"# {date.today()}  {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{'quick' if args.quick else 'full'} mode, MEDZOO_DATA={os.environ.get('MEDZOO_DATA')}", flush=True)
    for notebook in notebooks:
        workdir = out / notebook.stem
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ["MEDZOO_HOME"] = str(workdir / "medzoo-home")  # an empty cache: a student's first run decodes
        started = time.perf_counter()
        status = "ok"
        try:
            papermill.execute_notebook(str(notebook), str(workdir / notebook.name), cwd=str(workdir),
                                       parameters={"QUICK": args.quick, "WORKDIR": str(workdir),
                                                   **dict(parse_param(p) for p in args.param)},
                                       kernel_name="python3", progress_bar=False)
        except Exception as exc:  # report and go on with the next lab
            status = f"FAILED: {str(exc).splitlines()[-1] if str(exc) else type(exc).__name__}"
        seconds = time.perf_counter() - started
        results = lab_results(workdir / notebook.name) if (workdir / notebook.name).exists() else None
        print(f"{notebook.stem:28s} {seconds // 60:3.0f} min {seconds % 60:4.1f} s  {status}  {json.dumps(results)}",
              flush=True)
    print(f"# executed notebooks under {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
