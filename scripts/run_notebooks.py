#!/usr/bin/env python3
"""Executes the evcxr notebooks headless and exports them to HTML.

A notebook fails when a cell raises an error, the kernel dies (a panic, with the CI evcxr
configuration that aborts on panic), or a cell writes to stderr without the cell tag
`allow-stderr`. The executed notebook is saved even when it fails. Ends with the line
`notebooks: N passed, N failed` and exits 1 when any failed.

    scripts/run_notebooks.py [--quick] [--in-place] [--out DIR] [NOTEBOOK ...]
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
        kernel_name="rust",
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path)
    parser.add_argument("--quick", action="store_true", help="small subset, few epochs (FASHION_MNIST_QUICK=1)")
    parser.add_argument("--in-place", action="store_true", help="save outputs into notebooks/ (to commit a full run)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "target" / "notebooks", help="where executed notebooks and HTML go")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--ci", action="store_true", help="use notebooks/evcxr-ci (abort on panic, shared build cache)")
    args = parser.parse_args()

    if args.quick:
        os.environ["FASHION_MNIST_QUICK"] = "1"
    if args.ci:
        os.environ["EVCXR_CONFIG_DIR"] = str(NOTEBOOKS / "evcxr-ci")
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
