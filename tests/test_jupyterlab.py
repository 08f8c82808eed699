"""The quickstart in a real JupyterLab, as a user runs it: Run > Run All Cells in Chromium, then a
live ``%mlops_monitor --refresh`` that follows traffic sent from outside the notebook."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from nbmlops.artifact.frames import to_records
from nbmlops.datasets import make_churn
from nbmlops.jobs.notebooks import ensure_kernel
from tests.chromium import launch, needs_chromium

JUPYTER = Path(sys.executable).with_name("jupyter")
STEP_MS = 60_000  # one step in the page: the machine may have 2 loaded cores
CELL_MS = 120_000  # one cell that starts a server
RUN_ALL_MS = 300_000  # the whole quickstart: training, parity in a fresh process, serving...
PROMPT_DONE = re.compile(r"^\[\d+\]:$")

pytestmark = needs_chromium


@dataclass
class Lab:
    url: str
    token: str
    proc: subprocess.Popen
    left_behind: list[psutil.Process] = field(default_factory=list)

    def api(self, method: str, path: str):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
        return json.loads(body) if body else None


@contextmanager
def jupyter_lab(root: Path, home: Path, env: dict[str, str]) -> Iterator[Lab]:
    """``jupyter lab`` serving ``root`` on a free port, with its configuration, data and runtime
    under ``home`` (no user settings, kernels or news prompt leak in). On the way out its kernels
    are shut down through the REST API, then its process group is stopped; whatever survived
    that is killed and listed in ``left_behind``."""
    news = home / "config/lab/user-settings/@jupyterlab/apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **env,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = os.urandom(16).hex()
    log = home / "jupyter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(JUPYTER),
                "lab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={root}",
                f"--IdentityProvider.token={token}",
                *(["--allow-root"] if os.geteuid() == 0 else []),  # containers run as root
            ],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, proc)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"jupyter lab exited:\n{log.read_text()}"
            try:
                lab.api("GET", f"/api/status?token={token}")
                break
            except OSError:
                assert time.monotonic() < deadline, (
                    f"no answer from jupyter lab:\n{log.read_text()}"
                )
                time.sleep(0.2)
        yield lab
    finally:
        # kernels run in sessions of their own, and model servers in theirs
        descendants = []
        with suppress(psutil.NoSuchProcess):
            descendants = psutil.Process(proc.pid).children(recursive=True)
        with suppress(OSError):
            for kernel in lab.api("GET", "/api/kernels"):
                lab.api("DELETE", f"/api/kernels/{kernel['id']}")
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _, alive = psutil.wait_procs(descendants, timeout=20)
        for survivor in alive:
            with suppress(psutil.NoSuchProcess):
                survivor.kill()
        lab.left_behind = alive


def add_and_run(page, cells, *lines: str):
    """Add a code cell below the last one, type ``lines`` into it and run it (Ctrl+Enter)."""
    from playwright.sync_api import expect

    count = cells.count()
    cells.nth(count - 1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    expect(cells).to_have_count(count + 1)
    cell = cells.nth(count)
    cell.locator(".cm-content").click()
    for number, text in enumerate(lines):
        if number:
            page.keyboard.press("Enter")
        page.keyboard.type(text)
    page.keyboard.press("Control+Enter")
    expect(cell.locator(".jp-InputPrompt")).to_have_text(PROMPT_DONE, timeout=CELL_MS)
    return cell


def test_quickstart_runs_in_jupyterlab_and_its_monitor_follows_live_traffic(
    settings, repo_root, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    # the repository's convention: a kernelspec for this very interpreter, the venv's python
    kernel = ensure_kernel(settings)
    spec = json.loads((settings.home / "jupyter/kernels" / kernel / "kernel.json").read_text())
    notebook = json.loads((repo_root / "notebooks/quickstart.ipynb").read_text())
    notebook["metadata"]["kernelspec"] = {
        "name": kernel,
        "display_name": spec["display_name"],
        "language": "python",
    }
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":  # as a newcomer opens it: nothing run yet
            cell.update(outputs=[], execution_count=None)
    step = {
        cell["metadata"]["nbmlops"]["demo_step"]: index
        for index, cell in enumerate(notebook["cells"])
        if "nbmlops" in cell["metadata"]
    }
    root = tmp_path / "notebooks"
    root.mkdir()
    (root / "quickstart.ipynb").write_text(json.dumps(notebook, indent=1))
    env = {k: v for k, v in os.environ.items() if k != "NBMLOPS_TOKEN"}

    with jupyter_lab(root, tmp_path / "jupyter", env) as lab, sync_playwright() as playwright:
        browser = launch(playwright)
        expect.set_options(timeout=STEP_MS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(STEP_MS)
            page.goto(f"{lab.url}/lab/tree/quickstart.ipynb?token={lab.token}")
            panel = page.locator(".jp-NotebookPanel")
            expect(panel.locator(".jp-KernelName")).to_have_text(spec["display_name"])
            idle = panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            expect(idle).to_be_visible()
            cells = panel.locator(".jp-Notebook .jp-Cell")
            expect(cells).to_have_count(len(notebook["cells"]))

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).click()
            # Run All marks every cell queued ([*]) at once; done when none is left, whether
            # all ran or one failed and the rest were dequeued
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll(
                        '.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
                    return !prompts.some(p => p.includes('*')) && prompts.some(p => /\\d/.test(p));
                }""",
                timeout=RUN_ALL_MS,
            )
            prompts = [
                p.strip() for p in panel.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()
            ]
            stderr = panel.locator("[data-mime-type='application/vnd.jupyter.stderr']")
            # no pink box: no traceback, no warning
            assert stderr.all_text_contents() == []
            assert all(PROMPT_DONE.match(p) for p in prompts), prompts

            # %%mlops_package: the model card
            card = cells.nth(step["package"]).locator(".nbmlops-card")
            expect(card.locator("h3")).to_have_text("Model card: churn v1")
            facts = card.locator("tr")
            expect(facts.filter(has_text=re.compile("^parity"))).to_contain_text("passed")
            # JupyterLab tells the kernel which notebook runs: the lineage names it
            expect(facts.filter(has_text=re.compile("^notebook"))).to_contain_text(
                "quickstart.ipynb"
            )
            # !nbmlops models list: the kernel finds the venv's scripts
            shell = cells.filter(has=page.locator(".jp-InputArea", has_text="!nbmlops models"))
            expect(shell.locator(".jp-OutputArea-output")).to_contain_text(re.compile(r"churn +1"))
            # server = %mlops_serve churn: the handle, with its URL and a curl example
            handle = cells.nth(step["serve"]).locator(".jp-OutputArea-output")
            expect(handle).to_contain_text(re.compile(r"Serving churn v1 at http://127\.0\.0\.1:"))
            expect(handle.locator("pre")).to_contain_text("/predict")
            first_url = handle.locator("a").first.inner_text()
            # %mlops_monitor churn: the report, and its live line as a real ipywidget
            monitor = cells.nth(step["monitor"])
            expect(monitor.locator(".nbmlops-monitor")).to_contain_text("churn v1")
            expect(monitor.locator(".nbmlops-monitor")).to_contain_text("Drift per feature")
            line = monitor.locator(".jupyter-widgets.widget-hbox")
            expect(line.locator(".widget-html")).to_contain_text("live: churn v1, updated")
            expect(line.locator("button", has_text="Refresh now")).to_be_enabled()
            # %mlops_serve --stop all: the server above, stopped
            stopped = cells.nth(step["stop"]).locator(".jp-OutputArea-output")
            expect(stopped).to_contain_text("Stopped")
            expect(stopped).to_contain_text(first_url)

            served = add_and_run(page, cells, "server = %mlops_serve churn", "server")
            curl = served.locator(".jp-OutputArea-output pre").inner_text()
            found = re.fullmatch(r"curl -s (\S+)/predict .* -d '(.*)'", curl.strip())
            assert found, curl
            url = found[1]

            live = add_and_run(page, cells, "%mlops_monitor churn --refresh 1")
            prompt = live.locator(".jp-InputPrompt").inner_text()
            report = live.locator(".nbmlops-monitor")
            predictions = report.locator(
                "tr", has=page.locator("th", has_text=re.compile("^predictions$"))
            ).locator("td")
            expect(predictions).to_have_text(re.compile(r"^[\d,]+$"))
            before = int(predictions.inner_text().replace(",", ""))
            line = live.locator(".jupyter-widgets.widget-hbox")
            stamp = line.locator(".widget-html")
            expect(stamp).to_contain_text("live: churn v1, updated")
            expect(stamp).to_contain_text("refreshing every 1 s")
            stamped = stamp.inner_text()

            # new customers, scored from outside the notebook while its kernel is idle
            customers = to_records(make_churn(60, seed=7).drop(columns="churned"))
            for start in range(0, len(customers), 20):
                body = json.dumps({"records": customers[start : start + 20]}).encode()
                request = urllib.request.Request(
                    f"{url}/predict", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as answer:
                    assert len(json.loads(answer.read())["predictions"]) == 20
            # the same output, not run again: the report counts them, the live line moved on
            expect(predictions).to_have_text(f"{before + len(customers):,}")
            expect(stamp).not_to_have_text(stamped)
            expect(live.locator(".jp-InputPrompt")).to_have_text(prompt)
            expect(report).to_have_count(1)

            # the new server's cell and the live monitor, whole
            height = served.bounding_box()["height"] + live.bounding_box()["height"]
            page.set_viewport_size({"width": 1280, "height": min(int(height) + 160, 2400)})
            served.evaluate("cell => cell.scrollIntoView({block: 'start'})")
            page.screenshot(path=tmp_path / "jupyterlab.png", full_page=True)

            line.locator("button", has_text="Stop refreshing").click()
            expect(stamp).to_contain_text("stopped at")
            expect(line.locator("button", has_text="Stop refreshing")).to_be_disabled()

            stopped = add_and_run(page, cells, "%mlops_serve --stop all").locator(
                ".jp-OutputArea-output"
            )
            expect(stopped).to_contain_text("Stopped")
            expect(stopped).to_contain_text(url)
            listed = add_and_run(page, cells, "%mlops_serve --list")
            expect(listed.locator(".jp-OutputArea-output")).to_have_text("no servers running")
        finally:
            expect.set_options(timeout=5_000)  # playwright's default, for other tests
            browser.close()
    assert not lab.left_behind, f"still running after jupyter lab stopped: {lab.left_behind}"
