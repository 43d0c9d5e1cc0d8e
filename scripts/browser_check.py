#!/usr/bin/env python3
"""Opens a notebook in JupyterLab in headless Chromium, runs all its cells as a learner would
(Run > Run All Cells), and saves screenshots of what the page shows.

    .venv-notebooks/bin/python scripts/browser_check.py [--notebook 01-data-preparation.ipynb] [--out target/browser-check]

Needs Debian's chromium and chromium-driver and the selenium package (`pip install selenium`);
runs in quick mode. The notebook is opened as a copy beside the original (its relative paths
still work), so the committed notebook is never modified. Prints the number of cells run, the
charts (inline SVG) and error outputs found on the page, and exits 1 when a cell failed.
"""
import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout, what, driver=None, out=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    if driver is not None and out is not None:
        driver.save_screenshot(str(out / "timed-out.png"))
    sys.exit(f"timed out after {timeout} s waiting for {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebook", default="01-data-preparation.ipynb")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "target" / "browser-check")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    copy = NOTEBOOKS / f"browser-check-{args.notebook}"
    shutil.copy(NOTEBOOKS / args.notebook, copy)
    settings = pathlib.Path(tempfile.mkdtemp())
    # No autosave: the copy is thrown away anyway, and nothing else is written.
    plugin = settings / "@jupyterlab" / "docmanager-extension"
    plugin.mkdir(parents=True)
    (plugin / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    port = free_port()
    env = dict(os.environ, FASHION_MNIST_QUICK="1", JUPYTERLAB_SETTINGS_DIR=str(settings))
    jupyter = pathlib.Path(sys.executable).parent / "jupyter"
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={NOTEBOOKS}"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        env=env, stdout=subprocess.DEVNULL, stderr=open(args.out / "jupyter.log", "w"),
    )
    driver = None
    try:
        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2).status == 200
            except OSError:
                return False

        wait_for(up, 60, "the Jupyter server")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1400,1800"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        started = time.time()
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{copy.name}")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 120, "the notebook", driver, args.out)
        # The kernel is ready when the toolbar's status says Idle.
        wait_for(lambda: driver.execute_script(
            "return [...document.querySelectorAll('.jp-Notebook-ExecutionIndicator, .jp-KernelStatus')]"
            ".some(e => /idle/i.test(e.getAttribute('data-status') || e.title || e.textContent))"), 180, "the kernel", driver, args.out)
        driver.save_screenshot(str(args.out / "0-opened.png"))
        driver.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']").click()
        driver.find_element(By.XPATH, "//li[@data-command='runmenu:run-all']").click()
        code_cells = len(driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell"))

        def finished():
            prompts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
            done = [p for p in prompts if p.strip() and "*" not in p and p.strip() != "[ ]:"]
            running = [p for p in prompts if "*" in p]
            return len(done) == code_cells and not running

        wait_for(finished, args.timeout, "all cells to finish", driver, args.out)
        seconds = time.time() - started
        report = driver.execute_script("""
            const outputs = document.querySelectorAll('.jp-OutputArea-output');
            return {
              svgs: document.querySelectorAll('.jp-OutputArea-output svg').length,
              tables: document.querySelectorAll('.jp-OutputArea-output table').length,
              errors: [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                        .map(e => e.textContent.slice(0, 300)),
              outputs: outputs.length,
            };""")
        # One screenshot per chart, scrolled into view, then the end of the notebook.
        charts = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output svg")
        for index, chart in enumerate(charts, start=1):
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
            time.sleep(0.5)
            driver.save_screenshot(str(args.out / f"{index}-chart.png"))
        print(f"{args.notebook}: {code_cells} code cells run in {seconds:.0f} s (page load to last output); "
              f"{report['svgs']} charts, {report['tables']} tables, {report['outputs']} outputs, "
              f"{len(report['errors'])} stderr outputs; screenshots in {args.out}")
        for error in report["errors"]:
            print(f"  stderr: {error}")
        return 1 if report["errors"] else 0
    finally:
        if driver:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
        copy.unlink(missing_ok=True)
        shutil.rmtree(settings, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
