"""Real-browser tests: JupyterLab runs notebook 01 (the escalation pipeline) with
``params/ci.yaml`` in headless Chromium, and a filter changed in the page changes the
trajectories the explorer shows; the reviewer is used from the keyboard alone.

    bash scripts/browser_deps.sh                      # Debian's chromium, once (root)
    .venv/bin/python -m pytest -q tests/test_browser.py
    SAIR_REQUIRE_BROWSER=1 .venv/bin/python -m pytest -q tests/test_browser.py   # no skipping

The notebook is copied into a throw-away root folder with papermill's injected-parameters cell
(the entries of ``params/ci.yaml`` it declares, as the runner passes them, plus ``run_dir`` and
``stage_dir`` in the test's tmp folder); when the ci parameters make the pipeline draw with the
base model, stage 00 runs there first (``python -m sairlib.run --only 00``). The test then starts
``jupyter lab`` on a free port with a random token, drives the system ``chromium`` through
Playwright's sync API (``executable_path``; Playwright's own browser download is not used),
opens the notebook, runs all cells from the Run menu, waits for the explorer, selects a mode in
its dropdown and reads the shown trajectory cards (``[data-trajectory-id]``) back from the DOM.
The reviewer test opens the fixture notebook below and accepts, rejects (a reason typed, Tab to
the button, Enter) and uses the one-key box, then reads the decisions file. Screenshots (after
the filter, or at a failure) are left in the tests' tmp folders. Without chromium (or
playwright) the tests skip, unless ``SAIR_REQUIRE_BROWSER=1``.

``SAIR_BROWSER_NOTEBOOK=path/to/NN_name.ipynb`` opens another chain notebook the same way (e.g. a
draft of notebook 01); ``SAIR_BROWSER_NOTEBOOK=fixture`` opens
``tests/fixtures/notebooks/browser/explorer.ipynb`` (hand-made trajectories, no pipeline), to
debug the widget alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "notebooks" / "browser" / "explorer.ipynb"
NOTEBOOK = REPO_ROOT / "notebooks" / "01_pipeline.ipynb"
PARAMS = REPO_ROOT / "params" / "ci.yaml"
MODE = "multistep"  # the mode selected in the page
TIMEOUT_MS = 180_000

pytestmark = pytest.mark.slow


def chromium_path() -> str | None:
    for exe in ("chromium", "chromium-browser"):
        found = shutil.which(exe)
        if found:
            return found
    return None


def need_browser() -> str:
    """The chromium executable, or skip (fail with SAIR_REQUIRE_BROWSER=1) saying what is missing."""
    missing = []
    exe = chromium_path()
    if exe is None:
        missing.append("no chromium executable on PATH (run scripts/browser_deps.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package is not installed (pip install -e '.[test]')")
    if missing:
        why = "browser test: " + "; ".join(missing)
        if os.environ.get("SAIR_REQUIRE_BROWSER") == "1":
            pytest.fail(why + " (SAIR_REQUIRE_BROWSER=1)")
        pytest.skip(why)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_notebook(root: Path, work: Path) -> str:
    """Write the notebook to open into ``root`` (its run folder under ``work``); return its name."""
    chosen = os.environ.get("SAIR_BROWSER_NOTEBOOK", "")
    if chosen == "fixture":
        nbformat.write(nbformat.read(FIXTURE, as_version=4), root / FIXTURE.name)
        return FIXTURE.name
    notebook = Path(chosen).resolve() if chosen else NOTEBOOK
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from sairlib.params import load_params, stage_parameters
    from sairlib.run import discover

    assert notebook.exists(), f"{notebook.name} is missing"
    assert "TrajectoryExplorer" in notebook.read_text(), \
        f"{notebook.name} does not show the trajectory explorer (TrajectoryExplorer)"
    params = load_params(PARAMS, discover(REPO_ROOT / "notebooks"))
    run_dir = work / "outputs" / "ci"
    if "policy" in (params.get("pipeline", {}).get("direct"), params.get("pipeline", {}).get("redraw")):
        # the pipeline draws with the base model: stage 00 must have run in this run folder
        done = subprocess.run([sys.executable, "-m", "sairlib.run", "--params", str(PARAMS), "--only", "00",
                               "--outputs", str(work / "outputs"), "--run-id", "ci"],
                              cwd=REPO_ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"stage 00 failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    values = {**stage_parameters(params, notebook), "run_dir": str(run_dir),
              "stage_dir": str(run_dir / notebook.stem)}
    nb = parameterize_notebook(load_notebook_node(str(notebook)), values, kernel_name="python3", language="python")
    nbformat.write(nb, root / notebook.name)
    return notebook.name


class JupyterLab:
    """``jupyter lab`` on a free port with a random token; its config and state kept under ``home``."""

    def __init__(self, root: Path, home: Path) -> None:
        self.port, self.token = free_port(), secrets.token_hex(16)
        env = dict(os.environ)
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
            env[var] = str(home / sub)
        (home / "config").mkdir(parents=True, exist_ok=True)
        # nothing from the network: no news feed, no update check, no extension manager
        (home / "config" / "jupyter_lab_config.py").write_text(
            "c.LabApp.news_url = None\n"
            "c.LabApp.check_for_updates_class = 'jupyterlab.handlers.announcements.NeverCheckForUpdate'\n"
            "c.LabApp.extension_manager = 'readonly'\n")
        # user settings: start the notebook's kernel without asking, no news toast
        for plugin, values in (("notebook-extension/tracker", '{"autoStartDefaultKernel": true}'),
                               ("apputils-extension/notification", '{"fetchNews": "false", "checkForUpdates": false}')):
            f = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(values)
        self.log = home / "jupyter.log"
        self._log_file = self.log.open("w")
        exe = Path(sys.executable).with_name("jupyter")
        self.proc = subprocess.Popen(
            [str(exe), "lab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=root)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


@pytest.fixture
def lab(tmp_path):
    need_browser()
    root = tmp_path / "root"
    root.mkdir()
    server = JupyterLab(root, tmp_path / "jupyter")
    try:
        server.wait_ready()
        yield server, root
    finally:
        server.stop()


def shown(page) -> list[dict[str, str]]:
    return page.locator(".sair-explorer .sair-view [data-trajectory-id]").evaluate_all(
        "els => els.map(e => ({id: e.dataset.trajectoryId, mode: e.dataset.mode}))")


ERRORS = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"


@contextlib.contextmanager
def notebook_ran(server: JupyterLab, name: str, ready: str, shots: Path) -> Iterator[Any]:
    """Open ``name`` in JupyterLab, run all cells from the Run menu, wait until ``ready`` (a CSS
    selector) appears, and yield the page; a cell error fails with its text, any failure leaves a
    screenshot in ``shots``."""
    exe = need_browser()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(f"{server.url}/lab/tree/{name}?token={server.token}&reset")
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook")
            try:  # a kernel dialog, should this JupyterLab still ask: take the preferred kernel
                page.locator(".jp-Dialog .jp-mod-accept").click(timeout=5_000)
            except PlaywrightTimeout:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")  # the kernel is up
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            page.wait_for_function(f"""() => document.querySelector("{ready}") || document.querySelector("{ERRORS}")""")
            failed = page.locator(ERRORS)
            assert failed.count() == 0, f"a cell of {name} failed:\n{failed.first.inner_text()[-3000:]}"
            yield page
        except Exception:
            page.screenshot(path=str(shots / "browser-failure.png"))
            print(f"screenshot: {shots / 'browser-failure.png'}; server log: {server.log}")
            raise
        finally:
            browser.close()


def test_explorer_filter_in_jupyterlab(lab, tmp_path):
    server, root = lab
    name, mode = prepare_notebook(root, tmp_path), MODE
    with notebook_ran(server, name, ".sair-explorer .sair-view [data-trajectory-id]", tmp_path) as page:
        before = shown(page)
        assert before and {c["mode"] for c in before} != {mode}
        summary_before = page.locator(".sair-explorer .sair-summary").inner_text()

        page.locator(".sair-explorer .sair-filter-mode select").select_option(mode)
        page.wait_for_function(
            """([mode, ids]) => {
                const els = [...document.querySelectorAll('.sair-explorer .sair-view [data-trajectory-id]')];
                return els.length > 0 && els.every(e => e.dataset.mode === mode)
                    && els.map(e => e.dataset.trajectoryId).join() !== ids; }""",
            arg=[mode, ",".join(c["id"] for c in before)])
        after = shown(page)
        assert {c["mode"] for c in after} == {mode}
        assert [c["id"] for c in after] != [c["id"] for c in before]
        assert page.locator(".sair-explorer .sair-summary").inner_text() != summary_before
        # the static view sits next to the live widget, drawn by the same renderer
        assert page.locator(".sair-static [data-trajectory-id]").count() > 0
        # nothing the trajectories carry became markup
        assert page.locator(".sair-explorer script").count() == 0
        page.locator(".sair-explorer .sair-filter-mode").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "browser-after-filter.png"))


def test_reviewer_keyboard_in_jupyterlab(lab, tmp_path):
    """The reviewer of the fixture notebook, used from the keyboard only: one-key commands in
    its key box, Tab to a button and Enter / Space to press it; decisions land in the file."""
    server, root = lab
    nbformat.write(nbformat.read(FIXTURE, as_version=4), root / FIXTURE.name)
    with notebook_ran(server, FIXTURE.name, ".sair-reviewer [data-trajectory-id]", tmp_path) as page:
        def current() -> str:
            return page.locator(".sair-reviewer .sair-view [data-trajectory-id]").get_attribute("data-trajectory-id")

        def after_change(old: str) -> str:
            page.wait_for_function("""old => { const e = document.querySelector(
                '.sair-reviewer .sair-view [data-trajectory-id]'); return e && e.dataset.trajectoryId !== old; }""",
                                   arg=old)
            return current()

        first = current()
        page.locator(".sair-reviewer .sair-review-keys input").click()
        page.keyboard.type("a")                                   # accept, move on
        second = after_change(first)
        page.keyboard.type("r")                                   # reject without a reason: refused
        page.wait_for_selector(".sair-reviewer .sair-review-message :text('needs a reason')")
        assert current() == second
        reason = page.locator(".sair-reviewer .sair-review-reason input")
        reason.click()
        page.keyboard.type("the plan skips the diamond")
        assert reason.input_value() == "the plan skips the diamond"
        page.keyboard.press("Tab")                                # -> accept (the reason syncs on leaving)
        page.keyboard.press("Tab")                                # -> reject
        assert "sair-review-reject" in page.evaluate("document.activeElement.className")
        page.keyboard.press("Enter")
        third = after_change(second)
        page.keyboard.press("Shift+Tab")                          # -> accept
        page.keyboard.press(" ")
        after_change(third)
        assert page.locator(".jp-Notebook .jp-Cell").count() == 6  # no notebook shortcut fired
    lines = [json.loads(x) for x in (root / "reviews.jsonl").read_text().splitlines()]
    got = [(x["id"], x["decision"], x["reason"]) for x in lines]
    assert got == [(first, "accept", ""), (second, "reject", "the plan skips the diamond"), (third, "accept", "")], got
