"""End to end in a real browser: a shot run against `prefect server`, its QC artifacts seen in
the Prefect UI with headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Needs ``apt-get install -y chromium chromium-driver`` and the ``selenium`` package; skipped with
the reason otherwise. No browser is ever downloaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import IMAGES

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install -y chromium chromium-driver"),
    pytest.mark.skipif(not CHROMEDRIVER.exists(), reason="/usr/bin/chromedriver is absent: apt-get install -y chromium-driver"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def prefect_ui(tmp_path):
    """`prefect server start` on loopback with its own PREFECT_HOME; yields its base URL."""
    import httpx

    port = _free_port()
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # the UI's own API address: by default it would call 127.0.0.1:4200
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    env.pop("PREFECT_API_URL", None)
    exe = Path(sys.executable).with_name("prefect")
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prefect server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _browser(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,2000"):
        opts.add_argument(flag)
    opts.binary_location = str(CHROMIUM)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def _wait_text(driver, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not shown; page says: {driver.find_element('tag name', 'body').text[-1500:]}")


def test_qc_table_and_contact_sheet_show_in_the_prefect_ui(prefect_ui, short_plate, tmp_path):
    import httpx

    env = {**os.environ, "PREFECT_API_URL": f"{prefect_ui}/api", "RECAST_DATA_DIR": str(tmp_path / "data"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    exe = Path(sys.executable).with_name("recast")
    proc = subprocess.run([str(exe), "swap", "--plate", str(short_plate), "--source", str(IMAGES / "deepface_img17.jpg"),
                           "--out", str(tmp_path / "out.mp4"), "--mode", "face", "--chunk-size", "20", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    runs = httpx.post(f"{prefect_ui}/api/flow_runs/filter", json={"flow_runs": {"name": {"any_": [summary["shot"]]}}}).json()
    assert len(runs) == 1, runs
    flow_run_id = runs[0]["id"]
    arts = httpx.post(f"{prefect_ui}/api/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}).json()
    by_type = {}
    for a in arts:
        by_type.setdefault(a["type"], []).append(a)
    assert {"table", "markdown", "progress"} <= set(by_type), [(a["key"], a["type"]) for a in arts]
    assert {"segment-progress", "swap-progress", "render-progress"} <= {a["key"] for a in by_type["progress"]}

    driver = _browser(tmp_path / "chromium-profile")
    try:
        # the flow run page, artifacts tab: both QC artifacts are listed
        driver.get(f"{prefect_ui}/runs/flow-run/{flow_run_id}")
        _wait_text(driver, summary["shot"])
        tab = driver.find_element("xpath", "//li[contains(@class,'p-tab') and normalize-space(.)='Artifacts']")
        tab.click()
        body = _wait_text(driver, "QC contact sheet of")
        assert f"QC of {summary['shot']}: verdict {summary['qc']['verdict']}" in body
        shot_path = tmp_path / "flow-run-artifacts.png"
        driver.save_screenshot(str(shot_path))
        print(f"screenshot: {shot_path}")

        # the table artifact shows the metrics and the verdict
        table = by_type["table"][0]
        driver.get(f"{prefect_ui}/artifacts/artifact/{table['id']}")
        body = _wait_text(driver, "identity transfer rate")
        for label in ("verdict", "background PSNR (dB)", "seam score", "flicker ratio", summary["qc"]["verdict"].upper()):
            assert label in body, label
        driver.save_screenshot(str(tmp_path / "qc-table.png"))

        # the markdown artifact shows the contact sheet image (a data: URI that the browser decoded)
        md = by_type["markdown"][0]
        driver.get(f"{prefect_ui}/artifacts/artifact/{md['id']}")
        _wait_text(driver, "Columns: plate, output, difference heat map")
        deadline = time.monotonic() + 30
        images = []
        while time.monotonic() < deadline and not images:
            images = driver.execute_script(
                "return Array.from(document.images).filter(i => i.src.startsWith('data:image/jpeg') && i.complete)"
                ".map(i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])")
            time.sleep(0.5)
        assert images and images[0][0] >= 200 and images[0][2] > 0, images
        sheet_path = tmp_path / "contact-sheet-artifact.png"
        driver.save_screenshot(str(sheet_path))
        print(f"screenshot: {sheet_path}")
    finally:
        driver.quit()
