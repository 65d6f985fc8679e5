"""The panel's web view in real Chromium (Playwright): sign in, see the stall, travel back in
time, verify in the browser, catch a tampered proof, and pass axe-core's accessibility rules.

Never skipped: Chromium comes from Debian (`scripts/test` installs it) and axe-core from npm.
Screenshots are kept in `test-artifacts/`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright

from api.app import create_app
from api.settings import Settings
from ledger.core import Ledger
from ledger.demo import load_demo
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"


def big_case(ledger: Ledger) -> None:
    """A 1,000-event case for the page-speed measurement."""
    from ledger.core import Submission
    from ledger.demo import CHILD_A
    from ledger.keys import load_key_file

    signer = load_key_file(ledger.agency_key_path("met-police-south"))
    kinds = ["INCIDENT_LOGGED", "MISSING_REPORTED", "FOUND", "CHILD_SEEN", "INFORMATION_SHARED"]
    batch = []
    for n in range(1000):
        kind = kinds[n % len(kinds)]
        payload: dict[str, Any] = {"child_ref": CHILD_A, "rationale": "Reviewed; streetwise."}
        if kind == "INFORMATION_SHARED":
            payload["to_agency"] = "lambeth-csc"
        body = {
            "v": 1,
            "case_id": "BIG-1000",
            "event_id": f"big-{n:04d}",
            "type": kind,
            "occurred_at": f"2024-{1 + n // 90:02d}-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
            "agency": "met-police-south",
            "actor": {"role": "officer"},
            "payload": payload,
            "responds_to": [],
            "corrects": None,
            "key_id": signer.key_id,
        }
        batch.append(Submission.signed(body, signer))
    ledger.append_many(batch)


class Site:
    def __init__(self, base: str, token: str, app: Any) -> None:
        self.base, self.token, self.app = base, token, app


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    d = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{d}/web.sqlite"
    ledger = Ledger.open(url, d / "keys")
    load_demo(ledger, "web.test/log")
    token = ledger.tokens.issue("panel-web", "panel")
    big_case(ledger)
    ledger.checkpoint()
    ledger.close()
    app = create_app(Settings(db=url, keys=d / "keys", integrate_every_s=1, sweep_every_s=0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield Site(f"http://127.0.0.1:{port}", token, app)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is required (scripts/test installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def signed_in(browser: Browser, site: Site, bypass_csp: bool = False) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)
    p = context.new_page()
    p.goto(f"{site.base}/signin")
    p.fill("#token", site.token)
    p.click("button[type=submit]")
    p.wait_for_url(f"{site.base}/cases")
    return p


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.goto(f"{site.base}/signin")
    p.fill("#token", site.token)
    p.click("button[type=submit]")
    p.wait_for_url(f"{site.base}/cases")
    yield p
    context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_in_lists_the_cases_and_sign_out_ends_the_session(page: Page, site: Site) -> None:
    assert page.locator("table.cases tbody tr").count() == 7
    assert "with a breached standard" in page.inner_text(".count")
    shot(page, "cases")
    page.goto(f"{site.base}/cases?borough=Croydon&sort=breached")
    assert page.locator("table.cases tbody tr").count() == 2
    page.click(".signout button")
    page.wait_for_url(f"{site.base}/signin")
    page.goto(f"{site.base}/cases")
    assert page.url.endswith("/signin")


def test_wrong_token_is_refused(browser: Browser, site: Site) -> None:
    p = browser.new_page()
    p.goto(f"{site.base}/signin")
    p.fill("#token", "rl_not-a-token")
    p.click("button[type=submit]")
    assert "not an active panel token" in p.inner_text(".error")
    p.goto(f"{site.base}/cases/DEMO-LAM-0001")
    assert p.url.endswith("/signin")
    p.close()


def test_rape_disclosure_case_shows_the_police_stall(page: Page, site: Site) -> None:
    started = time.perf_counter()
    page.goto(f"{site.base}/cases/DEMO-LAM-0001")
    page.wait_for_selector("#timeline .mark")
    interactive_ms = (time.perf_counter() - started) * 1000
    stall = page.inner_text("#first-stall")
    assert (
        "Police (met-police-south) did not record the crime within 24 hours of the rape "
        "disclosure on 3 March 2024: never done (412 days)" in stall
    )
    assert page.locator("#timeline rect.bar.first").count() == 1
    assert page.locator("mark").first.inner_text() == "lifestyle choices"
    page.focus("#timeline .mark")
    assert "disclosure received" in page.inner_text("#mark-detail")
    shot(page, "case-rape-disclosure")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(
        json.dumps({"case_page_interactive_ms": round(interactive_ms, 1)})
    )


def test_replay_before_the_disclosure_shows_no_stall(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/cases/DEMO-LAM-0001")
    page.fill("#as_of", "2024-03-01")
    page.click(".asof-form button")
    page.wait_for_url("**as_of=2024-03-01**")
    assert page.inner_text("#first-stall").startswith("No stall")
    assert page.locator("#timeline .mark").count() == 0
    shot(page, "case-before-disclosure")


def test_verification_in_the_browser_passes(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/cases/DEMO-LAM-0001")
    page.click("#verify-button")
    page.wait_for_selector("#verify-result.ok, #verify-result.fail", timeout=20_000)
    assert page.inner_text("#verify-result").startswith("Verified: all 8 events"), page.inner_text(
        "#verify-result"
    )
    shot(page, "verify-pass")


def test_a_tampered_proof_byte_fails_naming_the_event(page: Page, site: Site) -> None:
    site.app.state.server.settings.test_tamper_proof = True
    try:
        page.goto(f"{site.base}/cases/DEMO-LAM-0001")
        page.click("#verify-button")
        page.wait_for_selector("#verify-result.ok, #verify-result.fail", timeout=20_000)
        text = page.inner_text("#verify-result")
        assert text.startswith("Verification FAILED")
        assert "(event DEMO-LAM-0001-00" in text and "does not match the signed checkpoint" in text
        shot(page, "verify-fail")
    finally:
        site.app.state.server.settings.test_tamper_proof = False


def test_keyboard_reaches_the_timeline_and_verify(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/cases/DEMO-SWK-0005")
    reached = set()
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert "verify-button" in reached and "circle" in reached


@pytest.mark.parametrize("path", ["/signin", "/cases", "/cases/DEMO-SWK-0002"])
def test_no_serious_accessibility_violations(browser: Browser, site: Site, path: str) -> None:
    assert AXE.exists(), "axe-core is required (scripts/test installs it with npm)"
    page = signed_in(browser, site, bypass_csp=True)  # the page's CSP would block the injection
    page.goto(f"{site.base}{path}")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    serious = [
        (v["id"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    page.context.close()
    assert serious == []


def test_print_stylesheet_hides_controls(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/cases/DEMO-LAM-0001")
    page.emulate_media(media="print")
    assert not page.is_visible("#verify-button")
    assert page.is_visible("table.chronology")
    ARTIFACTS.mkdir(exist_ok=True)
    page.pdf(path=str(ARTIFACTS / "chronology-print.pdf"), format="A4", landscape=True)


def test_measure_a_thousand_event_case_page(page: Page, site: Site) -> None:
    """Measured and written to test-artifacts/timings.json for the closing note, not asserted."""
    page.goto(f"{site.base}/cases/BIG-1000")  # warm the parsed-event cache once
    started = time.perf_counter()
    page.goto(f"{site.base}/cases/BIG-1000")
    page.wait_for_selector("#timeline .mark")
    interactive_ms = (time.perf_counter() - started) * 1000
    nav = page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return {server: n.responseStart - n.requestStart,"
        " dom: n.domContentLoadedEventEnd - n.startTime}; })()"
    )
    assert page.locator("#timeline .mark").count() == 1000
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings.update(
        {
            "big_case_events": 1000,
            "big_case_server_ms": round(nav["server"], 1),
            "big_case_dom_ready_ms": round(nav["dom"], 1),
            "big_case_interactive_ms": round(interactive_ms, 1),
        }
    )
    path.write_text(json.dumps(timings, indent=2))
