#!/usr/bin/env python3
"""Executes the evcxr notebooks headless and exports them to HTML.

A notebook fails when a cell raises an error, the kernel dies (a panic, with the CI evcxr
configuration that aborts on panic), or a cell writes to stderr without the cell tag
`allow-stderr`. The executed notebook is saved even when it fails. Ends with the line
`notebooks: N passed, N failed` and exits 1 when any failed.

    scripts/run_notebooks.py [--quick] [--in-place] [--out DIR] [--ci] [NOTEBOOK ...]
    scripts/run_notebooks.py --warm-up   # what scripts/setup-notebooks.sh runs

Notebooks run in the project's kernel "Rust (fashion-mnist)" (scripts/setup-notebooks.sh
registers it), with the same configuration a learner's kernel has.
"""
import argparse
import datetime
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbconvert import HTMLExporter

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "fashion-mnist"


def cell_seconds(cell):
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def problems_in(nb):
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        allow_stderr = "allow-stderr" in cell.get("metadata", {}).get("tags", [])
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"cell {index}: error {output.get('ename')}: {output.get('evalue')}")
            elif output.output_type == "stream" and output.name == "stderr" and not allow_stderr:
                found.append(f"cell {index}: wrote to stderr: {output.text.strip()[:300]}")
    return found


def run(path, out_dir, timeout):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=timeout,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        record_timing=True,
    )
    problems = []
    started = time.time()
    try:
        client.execute()
    except DeadKernelError as error:
        problems.append(f"kernel died (a panic?): {error}")
    except CellExecutionError as error:
        problems.append(f"cell failed: {str(error)[:500]}")
    except Exception as error:  # timeouts and kernel start failures
        problems.append(f"{type(error).__name__}: {error}")
    problems += problems_in(nb)
    elapsed = time.time() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    nbformat.write(nb, executed)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / (path.stem + ".html")).write_text(html)
    times = [(i, cell_seconds(c)) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    timing = ", ".join(f"{i}:{s:.1f}s" for i, s in times if s is not None)
    print(f"{path.name}: {'FAILED' if problems else 'ok'} in {elapsed:.0f} s (cells {timing})", flush=True)
    for problem in problems:
        print(f"  {problem}", flush=True)
    return not problems


def setup_cell():
    """The first code cell of notebook 01: it loads the library into the kernel."""
    nb = nbformat.read(NOTEBOOKS / "01-data-preparation.ipynb", as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def warm_up(timeout):
    """Runs the setup cell in one kernel, so its build directory holds the compiled library."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(setup_cell())]
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.time()
    try:
        client.execute()
    except Exception as error:
        print(f"warm-up failed: {type(error).__name__}: {error}", file=sys.stderr)
        return False
    problems = problems_in(nb)
    for problem in problems:
        print(f"warm-up: {problem}", file=sys.stderr)
    print(f"warm-up: the library compiled in the kernel in {time.time() - started:.0f} s", file=sys.stderr)
    return not problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path)
    parser.add_argument("--quick", action="store_true", help="small subset, few epochs (FASHION_MNIST_QUICK=1)")
    parser.add_argument("--in-place", action="store_true", help="save outputs into notebooks/ (to commit a full run)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "target" / "notebooks", help="where executed notebooks and HTML go")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--ci", action="store_true", help="use notebooks/evcxr-ci (the learners' configuration + abort on panic)")
    parser.add_argument("--warm-up", action="store_true", help="run the notebooks' setup cell once (fills the build new kernels start from)")
    args = parser.parse_args()

    if args.warm_up:
        sys.exit(0 if warm_up(args.timeout) else 1)
    if args.quick:
        os.environ["FASHION_MNIST_QUICK"] = "1"
    if args.ci:
        os.environ["FASHION_MNIST_EVCXR_CONFIG"] = str(NOTEBOOKS / "evcxr-ci")
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    passed = failed = 0
    for path in paths:
        out_dir = path.resolve().parent if args.in_place else args.out
        if run(path.resolve(), out_dir, args.timeout):
            passed += 1
        else:
            failed += 1
    print(f"notebooks: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
