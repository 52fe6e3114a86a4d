"""The web page, driven end to end in headless Chromium against a real service.

Skips unless ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` exist (Debian packages chromium
and chromium-driver) and selenium imports. Saves the screenshot ``docs/web.png``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "web.png"
TOKEN = "s3cret-token"
CHINESE = "张三在北京工作\n李四在上海工作\n王五在杭州工作"
# Stands in for the job endpoints in the page (a real job would train for minutes): records each
# call and answers running, then done; every other request goes to the real service.
FAKE_JOBS = """
const realFetch = window.fetch;
window.jobCalls = [];
window.fetch = async (url, init) => {
  const u = String(url);
  if (!u.startsWith("/v1/jobs")) return realFetch(url, init);
  window.jobCalls.push({url: u, method: (init && init.method) || "GET",
                        auth: (init && init.headers && init.headers.Authorization) || null,
                        bytes: init && init.body ? init.body.byteLength : 0});
  const reply = (o, s) => new Response(JSON.stringify(o),
      {status: s || 200, headers: {"Content-Type": "application/json"}});
  if (u.startsWith("/v1/jobs?")) return reply({job: 7}, 202);
  const log = ["read 2 sentences", "epoch 1/1: loss 0.5", "candidate version 2: gate accepts"];
  if (window.jobCalls.length < 3) {
    return reply({id: 7, status: "running", progress: 0.4, log: log.slice(0, 2), result: null});
  }
  return reply({id: 7, status: "done", progress: 1, log: log, error: null,
                result: {version: 2, decision: {accepted: true, reasons: ["fine"], deltas: {},
                                                new_types: {ORG: 0.62}}}});
};
"""

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(
        f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as err:  # pragma: no cover - depends on the environment
    pytest.skip(f"selenium does not import ({err})", allow_module_level=True)

import uvicorn  # noqa: E402

from diancang.archive import Archive  # noqa: E402
from diancang.service.app import ServiceConfig, create_app  # noqa: E402
from tests.test_tagger import make_tagger, overfit  # noqa: E402
from tests.toy import toy_sentences  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build_archive(root: Path, work: Path) -> Archive:
    """v1 (live: PER, LOC, overfit briefly so the screenshot shows entities), v2 (candidate the
    gate accepted: + ORG) and v3 (candidate the gate rejected: + PRO)."""
    archive = Archive(root)
    old = ["PER", "LOC"]
    data = [s.keep_types(old) for s in toy_sentences(30)]
    first = make_tagger(data, old)
    overfit(first, data, epochs=40)
    first.save_pretrained(work / "v1")
    v1 = archive.add_version(
        work / "v1",
        parent=None,
        types=old,
        strategies=["finetune"],
        config={"data": {"lang": "zh"}},
        datasets={"train": "toy"},
        metrics={"per_type": {"PER": 0.8, "LOC": 0.7}, "macro": 0.75},
        gate={"accepted": True, "reasons": [], "deltas": {}, "new_types": {}},
    )
    grown = ["PER", "LOC", "ORG"]
    make_tagger(toy_sentences(30), grown, seed=1).save_pretrained(work / "v2")
    archive.add_version(
        work / "v2",
        parent=v1.id,
        types=grown,
        strategies=["cpfd"],
        config={"data": {"lang": "zh"}},
        datasets={"train": "toy-org"},
        metrics={"per_type": {"PER": 0.79, "LOC": 0.71, "ORG": 0.62}, "macro": 0.7067},
        gate={
            "accepted": True,
            "reasons": [
                "Every new type (ORG) reaches the floor of 50.0.",
                "No old type drops more than 2.0 points (worst: PER -1.0).",
            ],
            "deltas": {"PER": -0.01, "LOC": 0.01},
            "new_types": {"ORG": 0.62},
        },
    )
    archive.add_version(
        work / "v1",  # never loaded: the gate refuses it before any model is read
        parent=v1.id,
        types=["PER", "LOC", "PRO"],
        strategies=["finetune"],
        config={"data": {"lang": "zh"}},
        datasets={"train": "toy-pro"},
        metrics={"per_type": {"PER": 0.55, "LOC": 0.6, "PRO": 0.41}, "macro": 0.52},
        gate={
            "accepted": False,
            "reasons": [
                "New type PRO reaches dev F1 41.0, below the floor of 50.0.",
                "Old type PER drops from 80.0 to 55.0 (-25.0 points), more than the allowed 2.0.",
            ],
            "deltas": {"PER": -0.25, "LOC": -0.1},
            "new_types": {"PRO": 0.41},
        },
    )
    archive.promote(v1.id)
    return archive


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("browser")
    # One torch thread: the other cores may be busy, and spinning OpenMP workers then stall
    # every step (a second per training step was seen with two threads).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    srv: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    try:
        _build_archive(tmp / "archive", tmp)
        app = create_app(ServiceConfig(archive=tmp / "archive", token=TOKEN))
        port = _free_port()
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, name="uvicorn-test", daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not _healthy(base):
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the service did not come up with version 1 live within 30 s")
            time.sleep(0.1)
        yield base
    finally:
        if srv is not None:
            srv.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        torch.set_num_threads(threads)


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as res:
            return bool(json.load(res).get("version") == 1)
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    # a 1280x900 viewport whatever the headless window's decorations
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, what: str, condition: Any, timeout: float = 15) -> Any:
    try:
        return WebDriverWait(
            driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        ).until(lambda d: condition(d))
    except TimeoutException:
        message = driver.find_element(By.ID, "message").text
        pytest.fail(f"timed out waiting for {what} (#message: {message!r})")


def _attr(element: Any, name: str) -> str:
    value = element.get_attribute(name)
    assert value is not None, f"no attribute {name}"
    return str(value)


def _rows(driver: WebDriver) -> dict[int, Any]:
    return {
        int(_attr(r, "data-version")): r
        for r in driver.find_elements(By.CSS_SELECTOR, "#versions tbody tr[data-version]")
    }


def _statuses(driver: WebDriver) -> dict[int, str]:
    """Read in one script, so a table re-rendered meanwhile cannot leave stale elements."""
    pairs = driver.execute_script(
        "return [...document.querySelectorAll('#versions tbody tr[data-version]')]"
        ".map(r => [r.dataset.version, r.dataset.status])"
    )
    return {int(i): status for i, status in pairs}


def _open(driver: WebDriver, base: str) -> None:
    driver.get(base + "/")
    _wait(
        driver,
        "the page to load",
        lambda d: d.execute_script("return document.body.dataset.ready") == "yes",
    )
    assert not driver.find_element(By.ID, "message").is_displayed(), driver.find_element(
        By.ID, "message"
    ).text


def test_page_loads_recognizes_and_plots(server: str, browser: WebDriver) -> None:
    _open(browser, server)
    assert "diancang" in browser.title
    for id_ in ("text", "recognize", "results", "versions", "plot", "token", "file", "upload"):
        assert browser.find_element(By.ID, id_)
    for id_ in ("job", "rollback", "message"):
        assert browser.find_elements(By.ID, id_)
    # the page fetched nothing but its own origin
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert all(o == server for o in origins), origins

    legend = [
        e.get_attribute("data-type")
        for e in browser.find_elements(By.CSS_SELECTOR, "#legend [data-type]")
    ]
    assert legend == ["PER", "LOC"]

    # recognize: one result block per non-empty line, the text shown as given
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(CHINESE)
    browser.find_element(By.ID, "recognize").click()
    _wait(
        browser,
        "the results",
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 3,
    )
    # each line shown as given (the type labels inside the marks aside), in order
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#results .result .text')].map(b => {"
        "  const n = b.cloneNode(true); n.querySelectorAll('.tag').forEach(t => t.remove());"
        "  return n.textContent; })"
    )
    assert shown == CHINESE.split("\n")
    for mark in browser.find_elements(By.CSS_SELECTOR, "#results mark.ent"):
        kind = _attr(mark, "data-type")
        assert kind in {"PER", "LOC"}
        assert _attr(mark, "title").startswith(f"{kind} · score ")
    assert "version 1" in browser.find_element(By.ID, "results").text

    # versions table: all three, v1 marked live, gate decisions with reasons
    rows = _rows(browser)
    assert set(rows) == {1, 2, 3}
    assert _statuses(browser) == {1: "live", 2: "candidate", 3: "candidate"}
    assert "live" in rows[1].text and "75.0" in rows[1].text
    assert "rejected" in rows[3].text and "below the floor" in rows[3].text
    assert "accepted" in rows[2].text
    assert not rows[1].find_elements(By.CSS_SELECTOR, "button.promote")
    assert rows[2].find_elements(By.CSS_SELECTOR, "button.promote")

    # the plot: one line per type seen in any version, with a legend entry each
    lines = browser.find_elements(By.CSS_SELECTOR, "#plot path.line")
    assert sorted(_attr(p, "data-type") for p in lines) == ["LOC", "ORG", "PER", "PRO"]
    for p in lines:
        assert _attr(p, "d").startswith("M")
    per = next(p for p in lines if _attr(p, "data-type") == "PER")
    assert _attr(per, "d").count("L") == 2  # three versions: one move, two segments
    legend_text = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#plot text.legend")]
    assert {"PER", "LOC", "ORG", "PRO"} <= set(legend_text)

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).perform()
    assert browser.save_screenshot(str(SCREENSHOT))


def test_token_upload_rollback_and_promote(server: str, browser: WebDriver, tmp_path: Path) -> None:
    _open(browser, server)
    message = browser.find_element(By.ID, "message")

    # no token: the server's refusal is shown
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""
    browser.find_element(By.ID, "rollback").click()
    _wait(browser, "an error message", lambda d: message.is_displayed() and message.text)
    assert "error" in _attr(message, "class")
    assert "missing or wrong bearer token" in message.text
    assert _statuses(browser)[1] == "live"

    browser.find_element(By.ID, "token").send_keys(TOKEN)
    assert TOKEN not in browser.current_url

    # a bad upload: the server's 422 names the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": ["张", "三"], "spans": []}\nnot json\n', encoding="utf-8")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    browser.find_element(By.ID, "upload").click()
    _wait(browser, "the 422 message", lambda d: "422" in message.text)
    assert "upload rejected" in message.text and "2" in message.text

    # a job: the upload carries the token and the format, then the page polls to the result
    data = tmp_path / "new.conll"
    data.write_text("张 B-PER\n三 I-PER\n\n", encoding="utf-8")
    browser.execute_script(FAKE_JOBS)
    browser.find_element(By.ID, "file").send_keys(str(data))
    assert Select(browser.find_element(By.ID, "format")).first_selected_option.text == "CoNLL"
    browser.find_element(By.ID, "upload").click()
    job = browser.find_element(By.ID, "job")
    _wait(browser, "the job to run", lambda d: "running" in job.text)
    _wait(browser, "the job to finish", lambda d: "New version 2" in job.text)
    assert "accepted" in job.text and "candidate version 2: gate accepts" in job.text
    bar = job.find_element(By.CSS_SELECTOR, "[role=progressbar]")
    assert bar.get_attribute("aria-valuenow") == "100"
    calls = browser.execute_script("return window.jobCalls")
    assert calls[0] == {
        "url": "/v1/jobs?format=conll",
        "method": "POST",
        "auth": f"Bearer {TOKEN}",
        "bytes": data.stat().st_size,
    }
    assert [c["url"] for c in calls[1:]] == ["/v1/jobs/7"] * 2
    assert all(c["method"] == "GET" for c in calls[1:])

    # the gate rejected v3: 409 with the server's detail, nothing changes
    _rows(browser)[3].find_element(By.CSS_SELECTOR, "button.promote").click()
    _wait(browser, "the 409 message", lambda d: "409" in message.text)
    assert "the gate rejected version 3" in message.text
    assert _statuses(browser)[1] == "live"

    # v2 was accepted: promote it and the table follows
    _rows(browser)[2].find_element(By.CSS_SELECTOR, "button.promote").click()
    _wait(browser, "version 2 to be live", lambda d: _statuses(d).get(2) == "live")
    assert _statuses(browser) == {1: "retired", 2: "live", 3: "candidate"}
    assert "ok" in _attr(message, "class") and "Version 2 is live" in message.text
    legend = [
        e.get_attribute("data-type")
        for e in browser.find_elements(By.CSS_SELECTOR, "#legend [data-type]")
    ]
    assert legend == ["PER", "LOC", "ORG"]

    # roll back with the token: v1 is live again
    browser.find_element(By.ID, "rollback").click()
    _wait(browser, "version 1 to be live again", lambda d: _statuses(d).get(1) == "live")
    assert _statuses(browser)[2] == "retired"
    assert TOKEN not in browser.current_url
    stored = browser.execute_script(
        "return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie"
    )
    assert TOKEN not in stored
