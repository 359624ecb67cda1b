"""The MLflow and Prefect UIs as a reviewer sees them, in headless Chromium (Playwright).

One short pipeline run (``--until package``, 32 px) fills a fresh home; ``fpgaflow ui mlflow`` and ``fpgaflow ui
prefect`` serve it on free ports, and the pipeline's links point at those ports. A screenshot of every page is
saved in ``tmp_path`` and, when ``FPGAFLOW_TEST_ARTIFACTS`` is set, copied there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from fpgaflow.flows.cli.ui import free_port
from fpgaflow.tasks.artifacts import PIPELINE_ARTIFACTS
from tests.integration.ui.test_ui_command import printed_url, start, stop

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("FPGAFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
# This machine's closed network refuses Chromium's own background connections: none are made.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 60_000  # for a selector to appear: generous, the machine may be busy
MODEL = "digits"
DESCRIPTION = "Digits for the browser review"
IMAGES_PER_CLASS = 12  # of the shared digits dataset: enough for the intake's rules and a test split
STEPS_BEFORE_PACKAGE_END = PIPELINE_ARTIFACTS[: PIPELINE_ARTIFACTS.index("model-card") + 1]


def installed_chromium() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/setup (it installs Debian's chromium package, "
            "`apt-get install chromium`), or set FPGAFLOW_TEST_CHROMIUM to a Chromium executable"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, digits_dir):
    """A home filled by one pipeline run, both UIs serving it, the run's summary."""
    home = tmp_path_factory.mktemp("review-home")
    mlflow_port, prefect_port = free_port(), free_port()
    environment = {
        **os.environ,
        "FPGAFLOW_HOME": str(home),
        "FPGAFLOW_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}",
        "FPGAFLOW_PREFECT_UI_URL": f"http://127.0.0.1:{prefect_port}",
    }
    environment.pop("PREFECT_API_URL", None)
    data = home / MODEL  # the model is named after its folder
    for label in sorted(path for path in digits_dir.iterdir() if path.is_dir()):
        (data / label.name).mkdir(parents=True)
        for image in sorted(label.iterdir())[:IMAGES_PER_CLASS]:
            shutil.copy2(image, data / label.name / image.name)
    command = [sys.executable, "-m", "fpgaflow.flows", "run", str(data), "--until", "package", "--weights", "none"]
    command += ["--input-size", "32", "--epochs", "2", "--hidden-units", "0", "--numerics", "fp32", "--quiet", "--json"]
    command += ["--tag", "team=vision", "--description", DESCRIPTION]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads(finished.stdout.splitlines()[-1])
    servers = {
        which: start([sys.executable, "-m", "fpgaflow.flows", "ui", which, "--port", str(port)], home, environment)
        for which, port in (("mlflow", mlflow_port), ("prefect", prefect_port))
    }
    try:
        urls = {which: printed_url(process) for which, process in servers.items()}
        yield SimpleNamespace(summary=summary, mlflow=urls["mlflow"], prefect=urls["prefect"])
    finally:
        for process in servers.values():
            stop(process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = installed_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run scripts/setup (it installs fpgaflow[dev])")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a new, empty profile
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=executable, args=CHROMIUM_ARGS, headless=True, viewport={"width": 1400, "height": 1000}
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def screenshot(tmp_path):
    """Saves the page as NAME.png in tmp_path and in $FPGAFLOW_TEST_ARTIFACTS/browser-review when set."""
    copies = os.environ.get("FPGAFLOW_TEST_ARTIFACTS")

    def save(page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if copies:
            folder = Path(copies) / "browser-review"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, folder / path.name)
        return path

    return save


def close_assistant(page) -> None:
    """MLflow's assistant panel covers a third of every page; a reviewer closes it."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()


def test_a_reviewer_finds_the_model_its_card_lineage_and_pictures_and_the_flow_run_with_its_artifacts(
    reviewed, browser, screenshot
):
    from playwright.sync_api import expect

    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # the UIs are React apps that load their data after the page
    summary = reviewed.summary
    version, flow_run_id = summary["model_version"], summary["flow_run_id"]
    page = browser.new_page()

    # The registered model: its versions, the candidate alias, the labels of the run.
    page.goto(f"{reviewed.mlflow}/#/models/{MODEL}")
    expect(page.get_by_role("link", name=f"Version {version}")).to_be_visible()
    close_assistant(page)
    expect(page.get_by_text("@ candidate").first).to_be_visible()
    expect(page.get_by_text("team").first).to_be_visible()
    screenshot(page, "1-mlflow-registered-model")

    # The version: its description heads the model card, with the lineage; its tags.
    page.goto(f"{reviewed.mlflow}/#/models/{MODEL}/versions/{version}")
    expect(page.get_by_text(f"{MODEL} version {version}", exact=True)).to_be_visible()
    expect(page.get_by_text(DESCRIPTION, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"dataset fingerprint: {summary['dataset_fingerprint']}")).to_be_visible()
    for section in ("Data", "Model", "Metrics", "Numeric format", "Gates", "Limits"):
        expect(page.get_by_text(section, exact=True).first).to_be_visible()
    expect(page.get_by_text("vision", exact=True).first).to_be_visible()
    flow_run_link = page.get_by_role("link", name=flow_run_id)
    flow_run_url = f"{reviewed.prefect}/runs/flow-run/{flow_run_id}"
    expect(flow_run_link).to_have_attribute("href", flow_run_url)
    screenshot(page, "2-mlflow-model-version")

    # The flow-run link opens the run in the Prefect UI: one artifact per step, on the run's graph too.
    page.goto(flow_run_url)
    expect(page.get_by_role("link", name="train_and_deploy")).to_be_visible()
    expect(page.get_by_text("Completed").first).to_be_visible()
    screenshot(page, "3-prefect-flow-run")
    page.get_by_text("Artifacts", exact=True).first.click()
    for key in STEPS_BEFORE_PACKAGE_END:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    screenshot(page, "4-prefect-flow-run-artifacts")

    # The evaluation artifact names the confusion matrix in the MLflow run; its link shows the picture.
    page.get_by_text("evaluation", exact=True).first.click()
    picture_link = page.get_by_role("link", name="evaluation/confusion_matrix.png")
    expect(picture_link).to_be_visible()
    screenshot(page, "5-prefect-evaluation-artifact")
    picture_url = picture_link.get_attribute("href")
    assert picture_url == (
        f"{reviewed.mlflow}/#/experiments/{mlflow_experiment_id(reviewed.mlflow, summary['mlflow_run_id'])}"
        f"/runs/{summary['mlflow_run_id']}/artifactPath/evaluation/confusion_matrix.png"
    )
    page.goto(picture_url)
    expect(page.get_by_text("per_class_metrics.png", exact=True)).to_be_visible()
    picture = page.locator("img[src^='blob:']").first
    expect(picture).to_be_visible()
    page.wait_for_function("image => image.complete && image.naturalWidth >= 300", arg=picture.element_handle())
    screenshot(page, "6-mlflow-confusion-matrix")
    page.close()


def mlflow_experiment_id(mlflow_url: str, run_id: str) -> str:
    with urllib.request.urlopen(f"{mlflow_url}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30) as response:
        return json.load(response)["run"]["info"]["experiment_id"]
