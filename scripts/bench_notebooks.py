#!/usr/bin/env python3
"""Measures what a learner waits for in the notebooks, and writes benchmarks/notebooks.md.

Run with the notebooks' Python (after scripts/setup-notebooks.sh):

    .venv-notebooks/bin/python scripts/bench_notebooks.py [--setup] [--out benchmarks/notebooks.md]

Measured, each in kernels of the project's kernel spec "Rust (fashion-mnist)" started the way
Jupyter starts them (quick mode, FASHION_MNIST_QUICK=1, unless said otherwise):
  - with --setup: scripts/setup-notebooks.sh from a state without the prepared build (evcxr_jupyter
    already installed; its one-time install is reported by the set-up script itself);
  - the first cell of every notebook, each in a new kernel; notebook 01 again in a new kernel
    (reopened) and after a kernel restart; two notebooks opened at once (both first cells run at
    the same time, then a cell that uses the library in each);
  - every cell of notebooks 01 and 02, split into training cells and the others;
  - LeNet-5 training inside the kernel against the release command line, same images and settings.
"""
import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import nbformat
from jupyter_client.manager import start_new_kernel

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "fashion-mnist"
# Cells that train or extract features (their time is the work itself, not latency).
WORK = re.compile(r"train_lenet5|random_search|successive_halving|cross_validate|transfer_learning|run_study")


def code_cells(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


class Kernel:
    """A kernel of the project's spec, started as Jupyter starts it (cwd: notebooks/)."""

    def __init__(self):
        started = time.time()
        self.manager, self.client = start_new_kernel(kernel_name=KERNEL, cwd=str(NOTEBOOKS), startup_timeout=120)
        self.start_seconds = time.time() - started

    def run(self, code, timeout=3600):
        """Runs a cell; returns (seconds, stdout text, error or None)."""
        out, errors = [], []

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")

        started = time.time()
        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook)
        seconds = time.time() - started
        if reply["content"]["status"] != "ok" and not errors:
            errors.append(reply["content"].get("evalue", "failed"))
        return seconds, "".join(out), (errors[0] if errors else None)

    def restart(self):
        started = time.time()
        self.manager.restart_kernel(now=True)
        self.client.wait_for_ready(timeout=120)
        return time.time() - started

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def checked(result, what):
    seconds, _, error = result
    if error:
        sys.exit(f"{what}: {error}")
    return seconds


def cpu_description():
    model, flags = platform.processor(), ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    vector = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl") if f in flags]
    return f"{model}, {os.cpu_count()} cores, vector extensions: {' '.join(vector) or 'unknown'}"


def first_cells(rows):
    for name in sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")):
        kernel = Kernel()
        seconds = checked(kernel.run(code_cells(name)[0]), f"{name} first cell")
        rows.append((f"first cell, new kernel: {name}", seconds, f"kernel start {kernel.start_seconds:.1f} s"))
        print(f"{name}: kernel start {kernel.start_seconds:.1f} s, first cell {seconds:.1f} s", flush=True)
        kernel.close()
    kernel = Kernel()
    seconds = checked(kernel.run(code_cells("01-data-preparation.ipynb")[0]), "reopened")
    rows.append(("first cell, notebook 01 reopened (new kernel)", seconds, f"kernel start {kernel.start_seconds:.1f} s"))
    restart = kernel.restart()
    seconds = checked(kernel.run(code_cells("01-data-preparation.ipynb")[0]), "after restart")
    rows.append(("first cell after restarting the kernel", seconds, f"restart {restart:.1f} s"))
    kernel.close()


def two_at_once(rows):
    names = ["01-data-preparation.ipynb", "02-lenet5.ipynb"]
    results = {}

    def open_notebook(name):
        kernel = Kernel()
        first = kernel.run(code_cells(name)[0])
        second = kernel.run(code_cells(name)[1])
        results[name] = (kernel.start_seconds, first, second)
        kernel.close()

    threads = [threading.Thread(target=open_notebook, args=(n,)) for n in names]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - started
    for name in names:
        start, first, second = results[name]
        checked(first, f"{name} first cell (two at once)")
        checked(second, f"{name} second cell (two at once)")
        rows.append((f"first cell, two notebooks at once: {name}", first[0], f"then a cell loading the data: {second[0]:.1f} s"))
    print(f"two at once: both done in {wall:.0f} s", flush=True)


def cell_latency(rows):
    latencies, work = [], []
    for name in ["01-data-preparation.ipynb", "02-lenet5.ipynb"]:
        kernel = Kernel()
        cells = code_cells(name)
        for index, code in enumerate(cells):
            seconds = checked(kernel.run(code), f"{name} cell {index}")
            if index == 0:
                continue
            first_line = code.strip().splitlines()[0][:60]
            label = f"{name[:2]} cell {index} `{first_line}`"
            (work if WORK.search(code) else latencies).append((label, seconds))
        kernel.close()
    values = [s for _, s in latencies]
    for label, seconds in latencies:
        if seconds > 2:
            rows.append((f"slower than 2 s: {label}", seconds, "does real work (see the note below the table)"))
    rows.append((
        f"later cells that do not train ({len(values)} cells of 01 and 02)",
        statistics.median(values),
        f"median; mean {statistics.mean(values):.2f} s, max {max(values):.2f} s; {sum(v <= 2 for v in values)} of {len(values)} within 2 s",
    ))
    return latencies


EPOCHS = 3


def in_kernel_vs_cli(rows):
    # The same run both ways: all 60,000 training images split 80/20 (seed 42), LeNet-5, Adam
    # 1e-3, batch 32, validation after every epoch (the walkthrough's training, 3 epochs).
    kernel = Kernel()
    checked(kernel.run(code_cells("02-lenet5.ipynb")[0]), "setup")
    code = f"""
let data = load_data().expect("data");
let split = prepare_split(&data, 0.2, 42, None);
let mut model = lenet5(42);
let config = TrainConfig {{ epochs: {EPOCHS}, ..TrainConfig::default() }};
let history = train_lenet5(&mut model, &split, &config).expect("training");
for r in &history.epochs {{ println!("EPOCH {{}} {{}}", r.epoch, r.seconds); }}
"""
    _, out, error = kernel.run(code)
    kernel.close()
    if error:
        sys.exit(f"in-kernel training: {error}")
    kernel_epochs = [float(m.group(1)) for m in re.finditer(r"EPOCH \d+ ([0-9.]+)", out)]
    binary = ROOT / "target" / "release" / "fashion-mnist"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as out_dir:
        subprocess.run(
            [str(binary), "train", "--epochs", str(EPOCHS), "--out", out_dir],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )
        history = json.loads((pathlib.Path(out_dir) / "history.json").read_text())
    cli_epochs = [e["seconds"] for e in history["epochs"]]
    if len(cli_epochs) != EPOCHS or len(kernel_epochs) != EPOCHS:
        sys.exit(f"could not read epoch times: kernel {kernel_epochs}, CLI {cli_epochs}")
    # The first epoch includes warm-up; compare the others.
    k, c = statistics.mean(kernel_epochs[1:]), statistics.mean(cli_epochs[1:])
    rows.append((
        "LeNet-5 epoch in the kernel (48,000 images + 12,000 validation)",
        k,
        f"release CLI, same run: {c:.2f} s; ratio kernel/CLI {k / c:.2f} (epochs 2-{EPOCHS}; kernel {', '.join(f'{s:.2f}' for s in kernel_epochs)}, CLI {', '.join(f'{s:.2f}' for s in cli_epochs)})",
    ))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="also time scripts/setup-notebooks.sh from an unprepared state")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "notebooks.md")
    args = parser.parse_args()
    os.environ["FASHION_MNIST_QUICK"] = "1"
    rows = []
    if args.setup:
        subprocess.run(["rm", "-rf", str(ROOT / "target" / "notebook-kernels")], check=True)
        started = time.time()
        subprocess.run([str(ROOT / "scripts" / "setup-notebooks.sh")], cwd=ROOT, check=True)
        rows.append(("scripts/setup-notebooks.sh, evcxr_jupyter already installed, no prepared build", time.time() - started, "Python side, kernel spec, prepared build"))
    first_cells(rows)
    two_at_once(rows)
    cell_latency(rows)
    in_kernel_vs_cli(rows)

    lines = [
        "# Notebook latency",
        "",
        "What a learner waits for, measured by `scripts/bench_notebooks.py` (kernels of the project's",
        "kernel spec started as Jupyter starts them; quick mode). Machine: " + cpu_description() + ";",
        f"measured {time.strftime('%Y-%m-%d')}.",
        "",
        "| what | seconds | notes |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {what} | {seconds:.1f} | {notes} |" for what, seconds, notes in rows]
    lines += [
        "",
        "Cells slower than 2 s load or examine all 60,000 images (the same work takes 0.5 s for",
        "`fashion-mnist data` and 1.2 s for `fashion-mnist eda` in the release CLI) or create the",
        "first model; the rest is evcxr's own cost per cell (about 1.2 s here: analysing the cell with",
        "rust-analyzer, compiling and linking it, loading it), which grows with the library types a",
        "cell stores in variables. A first cell spends most of its 20-30 s in evcxr's in-process",
        "rust-analyzer loading the ~180 dependencies (not in cargo or rustc: the build is prepared).",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
