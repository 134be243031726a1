"""The web page and the bookmarklet, in Debian's headless Chromium against a running tempalias.

Every test drives the real service (``service_factory``), whose aliases live in the session's
Redis; what the page shows is compared with what the store holds.
"""

from __future__ import annotations

import json
import math
import re
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from frontend_browser import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LIMITED_ON_LOOPBACK, axe_source,
                              decoded_png, third_party_site)
from harness.processes import wait_for
from tempalias.store import AliasNotFound

STATIC = Path(__file__).resolve().parent.parent / "static"
ALIAS_ADDRESS = re.compile(r"^([a-z0-9]{4,32})@tempalias\.test$")
BROWSER_TIMEOUT_MS = 15_000
OFFERED = ("tempalias.test", "second.test")
MX_HOST = "mx.tempalias.test"


# --- fixtures


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def web(service_factory):
    """tempalias as shipped: loopback is a trusted network, so no rate limit gets in the way."""
    return service_factory()


@pytest.fixture(scope="module")
def limited_web(service_factory):
    """tempalias with the real rate limiter on loopback: one new alias per target address a day."""
    return service_factory(env={**LIMITED_ON_LOOPBACK, "TEMPALIAS_CREATE_DAILY_PER_TARGET": "1/1d"})


@pytest.fixture(scope="module")
def domains_web(service_factory, dns_server):
    """tempalias with two domains of its own, looking custom domains up in the test's DNS server
    (``dns_zone`` writes its records). Its janitor runs every 0.2 s, so a domain's check comes
    as soon as it is due; stopped with the module, so it sweeps nothing behind later tests."""
    service = service_factory(env={
        "TEMPALIAS_DOMAINS": ",".join(OFFERED),
        "TEMPALIAS_DNS_SERVERS": dns_server.address,
        "TEMPALIAS_DNS_TIMEOUT": "2",
        "TEMPALIAS_MX_HOSTNAME": MX_HOST,
        "TEMPALIAS_PURGE_INTERVAL": "0.2",
    })
    yield service
    service.stop()


@pytest.fixture(scope="module")
def third_party():
    with third_party_site() as origin:
        yield origin


def new_page(browser, width: int = 1280, scheme: str = "light", **options) -> Page:
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                  **options)
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Console errors too (a CSP refusal shows only there), except the browser's note on every
    # 4xx answer, which some tests cause on purpose.
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None)
    page.script_errors = errors  # read by tests: no exception and no CSP refusal
    return page


@pytest.fixture
def page(browser):
    page = new_page(browser)
    yield page
    page.context.close()


def unique_target() -> str:
    """Each test its own target: the per-target limit lives in the shared Redis."""
    return f"reader-{uuid.uuid4().hex[:10]}@example.org"


def open_page(page: Page, base: str, fragment: str = "") -> None:
    page.goto(base + "/" + fragment)
    page.wait_for_selector("html[data-ready]", state="attached")


def create_through_form(page: Page, target: str, days: str = "3", uses: str = "5") -> str:
    page.fill("#target", target)
    page.fill("#days", days)
    page.fill("#uses", uses)
    page.click("#create-button")
    expect(page.locator("#result")).to_be_visible()
    return page.locator("#result-address").text_content()


def manage_parts(page: Page) -> tuple[str, str, str]:
    """The management link's (URL without fragment, id, token)."""
    href = page.get_attribute("#manage-link", "href")
    parts = urlsplit(href)
    match = re.fullmatch(r"manage/([a-z0-9]+)/([A-Za-z0-9_-]+)", parts.fragment)
    assert match, href
    return href.split("#")[0], match.group(1), match.group(2)


def api_create(base: str, target: str, days: int, uses: int | None) -> dict:
    request = urllib.request.Request(
        base + "/api/v1/aliases", method="POST",
        data=json.dumps({"target": target, "days": days, "uses": uses}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def run_bookmarklet(page: Page, href: str) -> None:
    """What a click on the bookmark does: run the link's code in the page (a browser runs a
    bookmarklet outside the page's CSP; whatever it loads is subject to it)."""
    assert href.startswith("javascript:")
    page.evaluate("source => { (0, eval)(source); }", unquote(href[len("javascript:"):]))


def window_globals(page: Page) -> set[str]:
    return set(page.evaluate("Object.getOwnPropertyNames(window)"))


def bookmarklet_href(page: Page, base: str, target: str) -> str:
    open_page(page, base)
    create_through_form(page, target, days="2", uses="4")
    return page.get_attribute("#bookmarklet-link", "href")


# --- the page


def test_create_alias_through_the_form(page, web, store):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web.http_url)
    origins = set()
    page.on("request", lambda request: origins.add(
        "{0.scheme}://{0.netloc}".format(urlsplit(request.url))))
    target = unique_target()
    open_page(page, web.http_url)
    expect(page.locator("#days")).to_have_value("7")  # the server's default_days

    address = create_through_form(page, target, days="3", uses="5")

    alias_id = ALIAS_ADDRESS.fullmatch(address).group(1)
    page_url, link_id, token = manage_parts(page)
    assert link_id == alias_id
    assert page_url == web.http_url + "/"  # the token rides in the fragment only
    stored = store.get(alias_id, token)
    assert (stored.target, stored.uses_left) == (target, 5)
    assert 3 * 86_400_000 - 60_000 <= stored.expires_ms - stored.created_ms <= 3 * 86_400_000
    expect(page.locator("#result-fate")).to_have_text(
        "After 3 days or 5 messages, whichever comes first, this alias is erased.")

    page.click("#copy-button")
    expect(page.locator("#copy-status")).to_contain_text("is on your clipboard")
    assert page.evaluate("navigator.clipboard.readText()") == address

    # The settings are remembered in the browser, not in a cookie.
    page.reload()
    page.wait_for_selector("html[data-ready]", state="attached")
    expect(page.locator("#target")).to_have_value(target)
    expect(page.locator("#days")).to_have_value("3")
    expect(page.locator("#uses")).to_have_value("5")
    assert page.context.cookies() == []
    assert origins == {web.http_url}  # everything came from tempalias itself
    assert page.script_errors == []


def test_manage_link_shows_counts_and_revokes(page, web, store):
    target = unique_target()
    created = api_create(web.http_url, target, days=5, uses=5)
    for _ in range(2):  # two messages delivered, the way the SMTP proxy counts them
        store.commit(store.reserve(created["id"]))

    open_page(page, web.http_url, f"#manage/{created['id']}/{created['token']}")

    expect(page.locator("#manage-address")).to_have_text(created["address"])
    expect(page.locator("#manage-target")).to_have_text(target)
    expect(page.locator("#manage-uses")).to_have_text("3")
    expect(page.locator("#manage-delivered")).to_have_text("2")
    expires_year = created["expires_at"][:4]
    expect(page.locator("#manage-expires")).to_contain_text(expires_year)

    page.click("#revoke-button")
    expect(page.locator("#revoke-confirm")).to_be_visible()
    page.click("#revoke-no")  # changing one's mind keeps the alias
    expect(page.locator("#revoke-confirm")).to_be_hidden()
    assert store.lookup(created["id"]).target == target

    page.click("#revoke-button")
    page.click("#revoke-yes")
    expect(page.locator("#manage-status")).to_contain_text("Revoked")
    with pytest.raises(AliasNotFound):
        store.lookup(created["id"])

    page.reload()
    expect(page.locator("#manage-status")).to_contain_text("does not exist any more")
    expect(page.locator("#manage-details")).to_be_hidden()
    assert page.script_errors == []


REPLIES_LABEL = "Let me reply through this alias (my address stays hidden)"


def test_the_replies_checkbox_makes_an_alias_that_takes_replies(browser, web, third_party, store):
    page = new_page(browser)
    try:
        open_page(page, web.http_url)
        box = page.locator("#replies")
        expect(box).to_have_accessible_name(REPLIES_LABEL)
        expect(box).not_to_be_checked()  # off unless asked for
        label = page.locator("label[for=replies]")
        expect(label).to_have_text(REPLIES_LABEL)
        assert label.bounding_box()["height"] < 40  # one line, the box beside it
        box.check()
        target = unique_target()
        address = create_through_form(page, target, days="2", uses="4")
        expect(page.locator("#result-replies")).to_have_text("Replies through this alias: on")
        _, alias_id, token = manage_parts(page)
        assert store.get(alias_id, token).replies
        href = page.get_attribute("#bookmarklet-link", "href")

        # The choice is remembered with the other settings, and the manage view tells it.
        page.reload()
        page.wait_for_selector("html[data-ready]", state="attached")
        expect(page.locator("#replies")).to_be_checked()
        open_page(page, web.http_url, f"#manage/{alias_id}/{token}")
        expect(page.locator("#manage-address")).to_have_text(address)
        expect(page.locator("#manage-replies")).to_have_text("on")

        open_page(page, web.http_url)
        page.locator("#replies").uncheck()
        create_through_form(page, target)
        expect(page.locator("#result-replies")).to_have_text("Replies through this alias: off")
        _, off_id, off_token = manage_parts(page)
        assert not store.get(off_id, off_token).replies
        open_page(page, web.http_url, f"#manage/{off_id}/{off_token}")
        expect(page.locator("#manage-replies")).to_have_text("off")
        assert page.script_errors == []

        # The bookmarklet made with replies on makes aliases that take replies too.
        page.goto(third_party + "/signup")
        run_bookmarklet(page, href)
        page.click("#email")
        expect(page.locator("#email")).to_have_value(ALIAS_ADDRESS)
        made = ALIAS_ADDRESS.fullmatch(page.locator("#email").input_value()).group(1)
        assert store.lookup(made).replies
    finally:
        page.context.close()


def test_wrong_token_shows_nothing_private(page, web):
    created = api_create(web.http_url, unique_target(), days=1, uses=None)
    open_page(page, web.http_url, f"#manage/{created['id']}/not-the-token")
    expect(page.locator("#manage-status")).to_contain_text("does not exist any more")
    assert created["target"] not in page.content()


def test_validation_errors_are_shown_next_to_their_fields(page, web):
    posts = []
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    open_page(page, web.http_url)
    page.fill("#target", "")
    page.fill("#days", "0")
    page.fill("#uses", "1000")
    page.click("#create-button")

    expect(page.locator("#target-error")).to_have_text(
        "Enter the address the alias should forward to.")
    expect(page.locator("#days-error")).to_have_text("Choose a whole number of days from 1 to 60.")
    expect(page.locator("#uses-error")).to_contain_text("from 1 to 100 messages")
    for name in ("target", "days", "uses"):
        assert page.get_attribute(f"#{name}", "aria-invalid") == "true"
        assert page.get_attribute(f"#{name}-error", "aria-live") == "polite"
        assert f"{name}-error" in page.get_attribute(f"#{name}", "aria-describedby")
    assert page.evaluate("document.activeElement.id") == "target"
    assert posts == []  # checked before submit: nothing was sent

    # One the browser cannot know: the server's 422 comes back to the same place, in words.
    page.fill("#target", "someone@intranet")
    page.fill("#days", "2")
    page.fill("#uses", "")
    page.click("#create-button")
    expect(page.locator("#target-error")).to_contain_text("not a fully qualified domain name")
    assert "{" not in page.locator("#target-error").text_content()
    assert len(posts) == 1
    expect(page.locator("#result")).to_be_hidden()


def _wait_in_words(seconds: int) -> str:
    """How the page says a Retry-After (static/words.js waitInWords)."""
    def plural(count, one, many):
        return f"{count} {one if count == 1 else many}"
    if seconds < 60:
        return plural(max(1, seconds), "second", "seconds")
    if seconds < 3600:
        return plural(math.ceil(seconds / 60), "minute", "minutes")
    if seconds < 86400:
        return plural(math.ceil(seconds / 3600), "hour", "hours")
    return plural(math.ceil(seconds / 86400), "day", "days")


def test_rate_limit_is_shown_next_to_the_field(page, limited_web, store):
    target = unique_target()
    open_page(page, limited_web.http_url)
    create_through_form(page, target)
    page.click("#another-button")

    with page.expect_response(re.compile(r"/api/v1/aliases$")) as refused:
        page.click("#create-button")
    assert refused.value.status == 429
    retry_after = int(refused.value.headers["retry-after"])

    error = page.locator("#target-error")
    expect(error).to_have_text("Many aliases were made for this address recently. "
                               f"Please try again in {_wait_in_words(retry_after)}.")
    assert page.get_attribute("#target", "aria-invalid") == "true"
    expect(page.locator("#result")).to_be_hidden()


def test_store_outage_is_a_friendly_message(service_factory, browser):
    from tempalias.embedded_redis import free_loopback_port

    down = service_factory(env={
        "TEMPALIAS_REDIS_URL": f"redis://127.0.0.1:{free_loopback_port()}/0",
        "TEMPALIAS_REDIS_TIMEOUT": "2",
    })
    page = new_page(browser)
    try:
        open_page(page, down.http_url)
        page.fill("#target", unique_target())
        with page.expect_response(re.compile(r"/api/v1/aliases$")) as answer:
            page.click("#create-button")
        assert answer.value.status == 503
        expect(page.locator("#form-error")).to_have_text(
            "tempalias is having a short break. Please try again in a moment.")
        assert page.get_attribute("#form-error", "aria-live") == "assertive"
        expect(page.locator("#create-button")).to_be_enabled()

        open_page(page, down.http_url, "#manage/abcdef/some-token")
        expect(page.locator("#manage-status")).to_have_text(
            "tempalias is having a short break. Please try again in a moment.")
    finally:
        page.context.close()
        down.stop()


# --- the bookmarklet on somebody else's site


def test_bookmarklet_fills_a_third_party_field(browser, web, third_party, store):
    page = new_page(browser)
    try:
        target = unique_target()
        href = bookmarklet_href(page, web.http_url, target)
        loads = []
        page.on("request", lambda request: loads.append(request.url)
                if request.url.endswith("/bookmarklet.js") else None)
        page.goto(third_party + "/signup")
        before = window_globals(page)

        run_bookmarklet(page, href)
        overlay = page.locator("[data-tempalias] .message")
        expect(overlay).to_contain_text("Click the email field")
        page.hover("#email")
        expect(page.locator("[data-tempalias] .highlight")).to_be_visible()
        page.click("#email")

        email = page.locator("#email")
        expect(email).to_have_value(ALIAS_ADDRESS)
        address = email.input_value()
        expect(overlay).to_have_text(f"Filled in {address}. It forwards to you for 2 days or 4 "
                                     "messages, whichever comes first, then it is erased.")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "frontend-bookmarklet-filled.png")
        alias = store.lookup(ALIAS_ADDRESS.fullmatch(address).group(1))
        assert (alias.target, alias.uses_left) == (target, 4)
        assert page.evaluate("window.shopEvents") == [f"input:{address}", f"change:{address}"]
        expect(page.locator("#seen")).to_have_text(f"the shop saw {address}")
        # The shop's "div, p { font-size: 40px !important }" does not reach into the overlay.
        assert page.evaluate("getComputedStyle(document.querySelector('[data-tempalias]')"
                             ".shadowRoot.querySelector('.message')).fontSize") == "15px"
        assert len(window_globals(page) - before) <= 1

        # Again, with the field focused: it is used at once, and the script is not loaded again.
        page.keyboard.press("Escape")
        expect(page.locator("[data-tempalias]")).to_have_count(0)
        email.fill("")
        email.focus()
        run_bookmarklet(page, href)
        expect(email).to_have_value(ALIAS_ADDRESS)
        assert email.input_value() != address
        assert len(loads) == 1
        assert window_globals(page) - before <= {"__tempalias"}
        assert page.script_errors == []
    finally:
        page.context.close()


def test_bookmarklet_escape_cancels_and_leaves_the_page_alone(browser, web, third_party):
    page = new_page(browser)
    try:
        href = bookmarklet_href(page, web.http_url, unique_target())
        page.goto(third_party + "/signup")
        run_bookmarklet(page, href)
        expect(page.locator("[data-tempalias] .message")).to_contain_text("Click the email field")
        page.keyboard.press("Escape")
        expect(page.locator("[data-tempalias]")).to_have_count(0)
        page.click("#email")  # an ordinary click again: nothing is filled
        page.keyboard.type("me@shop.example")
        expect(page.locator("#email")).to_have_value("me@shop.example")
        assert page.script_errors == []
    finally:
        page.context.close()


def test_bookmarklet_failure_is_shown_and_the_field_is_unchanged(browser, limited_web,
                                                                 third_party):
    page = new_page(browser)
    try:
        # The page made the one alias this target may have today; the bookmarklet asks for another.
        href = bookmarklet_href(page, limited_web.http_url, unique_target())
        page.goto(third_party + "/signup")
        page.fill("#email", "typed@shop.example")
        page.focus("#email")
        events_before = page.evaluate("window.shopEvents.length")
        run_bookmarklet(page, href)
        expect(page.locator("[data-tempalias] .message")).to_contain_text(
            "Too many new aliases just now. Try again in")
        expect(page.locator("[data-tempalias] .message")).to_contain_text(
            "The field was left unchanged.")
        expect(page.locator("#email")).to_have_value("typed@shop.example")
        assert page.evaluate("window.shopEvents.length") == events_before
    finally:
        page.context.close()


def test_bookmarklet_blocked_by_csp_falls_back_to_a_window(browser, web, third_party, store):
    page = new_page(browser)
    try:
        target = unique_target()
        href = bookmarklet_href(page, web.http_url, target)
        page.goto(third_party + "/strict")
        with page.expect_popup() as popup_info:
            run_bookmarklet(page, href)
        popup = popup_info.value
        popup.wait_for_selector("html[data-ready]", state="attached")
        assert popup.url.startswith(web.http_url + "/#new?")
        expect(popup.locator("#fallback-notice")).to_be_visible()
        expect(popup.locator("#fallback-notice")).to_contain_text("blocks the bookmarklet")
        expect(popup.locator("#target")).to_have_value(target)
        expect(popup.locator("#days")).to_have_value("2")
        expect(popup.locator("#uses")).to_have_value("4")
        assert page.evaluate("typeof window.__tempalias") == "undefined"
        expect(page.locator("#email")).to_have_value("")

        popup.click("#create-button")
        address = popup.locator("#result-address")
        expect(address).to_have_text(ALIAS_ADDRESS)
        alias_id = ALIAS_ADDRESS.fullmatch(address.text_content()).group(1)
        assert store.lookup(alias_id).target == target
    finally:
        page.context.close()


# --- several domains, and your own domain


def test_domain_picker_makes_the_alias_and_the_bookmarklet_at_the_chosen_domain(
        browser, domains_web, third_party, store):
    page = new_page(browser)
    try:
        target = unique_target()
        open_page(page, domains_web.http_url)
        expect(page.locator("#field-domain")).to_be_visible()
        picker = page.locator("#alias-domain")
        assert picker.locator("option").all_text_contents() == list(OFFERED)
        expect(picker).to_have_value(OFFERED[0])  # the server's default comes first
        expect(page.locator("#about-domains")).to_have_text(", ".join(OFFERED))

        page.select_option("#alias-domain", "second.test")
        address = create_through_form(page, target, days="2", uses="4")
        match = re.fullmatch(r"([a-z0-9]{4,32})@second\.test", address)
        assert match, address
        alias = store.lookup(match.group(1))
        assert (alias.target, alias.domain) == (target, "second.test")

        # The bookmarklet made here makes its aliases at the domain chosen here.
        href = page.get_attribute("#bookmarklet-link", "href")
        page.reload()
        page.wait_for_selector("html[data-ready]", state="attached")
        expect(page.locator("#alias-domain")).to_have_value("second.test")  # remembered
        page.goto(third_party + "/signup")
        page.focus("#email")
        run_bookmarklet(page, href)
        email = page.locator("#email")
        expect(email).to_have_value(re.compile(r"^[a-z0-9]{4,32}@second\.test$"))
        assert email.input_value() != address
        assert store.lookup(email.input_value().split("@")[0]).domain == "second.test"
        assert page.script_errors == []
    finally:
        page.context.close()


def test_one_domain_shows_no_picker(page, web):
    open_page(page, web.http_url)
    page.wait_for_load_state("networkidle")  # the list of domains has come in
    expect(page.locator("#field-domain")).to_be_hidden()
    expect(page.locator("#about-domains")).to_have_text("tempalias.test")


def shown_records(page: Page) -> list[tuple[str, str, str]]:
    """The records the page asks the owner to publish: (type, name, value)."""
    expect(page.locator("#records li")).to_have_count(2)
    return [(page.locator(f"#records li >> nth={index} >> .record-type").text_content().split()[0],
             page.locator(f"#record-{index}-name").text_content(),
             page.locator(f"#record-{index}-value").text_content()) for index in range(2)]


def domain_link_parts(page: Page) -> tuple[str, str, str]:
    """The domain's management link: (URL without fragment, domain, token)."""
    href = page.get_attribute("#domain-link", "href")
    match = re.fullmatch(r"domain/([a-z0-9.-]+)/([A-Za-z0-9_-]+)", urlsplit(href).fragment)
    assert match, href
    return href.split("#")[0], match.group(1), match.group(2)


def register_through_page(page: Page, base: str, domain: str) -> list[tuple[str, str, str]]:
    open_page(page, base)
    page.click("nav >> text=Own domain")
    expect(page.locator("#own")).to_be_visible()
    expect(page.locator("#create")).to_be_hidden()
    page.fill("#own-domain", domain)
    page.click("#own-button")
    expect(page.locator("#domain-view")).to_be_visible()
    return shown_records(page)


def publish(dns_zone, records: list[tuple[str, str, str]]) -> None:
    for rtype, name, value in records:
        dns_zone.set_records(name, rtype, [value])


def check_now(page: Page) -> None:
    with page.expect_response(re.compile(r"/verify$")):
        page.click("#check-button")
    expect(page.locator("#check-button")).to_have_text("Check now")


def test_own_domain_from_registration_to_aliases(browser, domains_web, dns_zone, store):
    domain = "temp.example.org"
    page = new_page(browser)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=domains_web.http_url)
    try:
        records = register_through_page(page, domains_web.http_url, domain)
        assert records[0] == ("MX", domain, f"10 {MX_HOST}")
        assert records[1][:2] == ("TXT", f"_tempalias.{domain}")
        assert re.fullmatch(r"tempalias-verify=[a-z2-7]{32}", records[1][2])
        expect(page.locator("#domain-state")).to_have_text("Waiting for its DNS records")
        expect(page.locator("#domain-alias-form")).to_be_hidden()
        link_base, link_domain, token = domain_link_parts(page)
        assert (link_base, link_domain) == (domains_web.http_url + "/", domain)
        assert token not in records[1][2]  # the TXT value is not the token
        assert page.url == page.get_attribute("#domain-link", "href")  # reload keeps the view

        page.click("#records li >> nth=1 >> button[aria-label=\"Copy the TXT record's value\"]")
        expect(page.locator("#records-copy-status")).to_have_text(
            "The TXT record's value is on your clipboard.")
        assert page.evaluate("navigator.clipboard.readText()") == records[1][2]

        # Nothing published yet: the check names both records, in words.
        check_now(page)
        problems = page.locator("#check-problems li")
        expect(problems).to_have_count(2)
        text = " ".join(problems.all_text_contents())
        assert "MX" in text and domain in text and MX_HOST in text, text
        assert f"_tempalias.{domain}" in text, text
        assert page.get_attribute("#check-result", "aria-live") == "polite"

        # A TXT record is whatever its zone's owner wrote, here markup: it stays text.
        dns_zone.set_records(f"_tempalias.{domain}", "TXT",
                             ['<img src=x onerror="window.pwned=1">'])
        check_now(page)
        expect(problems).to_have_count(2)
        expect(page.locator("#check-problems")).to_contain_text("<img src=x")
        expect(page.locator("#check-problems img")).to_have_count(0)
        assert page.evaluate("typeof window.pwned") == "undefined"

        publish(dns_zone, records)
        check_now(page)
        expect(page.locator("#domain-state")).to_have_text("Active")
        expect(page.locator("#domain-status")).to_contain_text(f"{domain} is active")
        expect(page.locator("#check")).to_be_hidden()
        expect(page.locator("#domain-alias-form")).to_be_visible()
        assert page.evaluate("document.activeElement.id") == "domain-alias-title"

        target = unique_target()
        page.fill("#own-local", "Shop-News")
        page.fill("#own-target", target)
        page.fill("#own-days", "2")
        page.fill("#own-uses", "3")
        page.click("#domain-alias-button")
        expect(page.locator("#domain-alias-address")).to_have_text(f"shop-news@{domain}")
        expect(page.locator("#domain-aliases")).to_have_text("1")
        alias = store.lookup(f"shop-news@{domain}")
        assert (alias.target, alias.uses_left) == (target, 3)
        alias_link = urlsplit(page.get_attribute("#domain-alias-link", "href")).fragment
        assert alias_link.startswith(f"manage/shop-news%40{domain}/")

        # The same name again is refused next to the field; an empty name is a random one.
        page.click("#domain-alias-another")
        page.fill("#own-local", "shop-news")
        page.fill("#own-target", target)
        page.click("#domain-alias-button")
        expect(page.locator("#own-local-error")).not_to_be_empty()
        expect(page.locator("#own-local")).to_have_attribute("aria-invalid", "true")
        page.fill("#own-local", "")
        page.click("#domain-alias-button")
        expect(page.locator("#domain-alias-address")).to_have_text(
            re.compile(rf"^[a-z0-9]{{4,32}}@{re.escape(domain)}$"))
        expect(page.locator("#domain-aliases")).to_have_text("2")
        assert page.script_errors == []

        # Somebody else cannot register it any more.
        other = new_page(browser)
        try:
            open_page(other, domains_web.http_url, "#your-domain")
            other.fill("#own-domain", domain)
            other.click("#own-button")
            expect(other.locator("#own-domain-error")).to_contain_text("already serves this domain")
        finally:
            other.context.close()

        # The management link, opened later in a fresh browser.
        fresh = new_page(browser)
        try:
            open_page(fresh, domains_web.http_url, "#" + urlsplit(
                page.get_attribute("#domain-link", "href")).fragment)
            expect(fresh.locator("#domain-state")).to_have_text("Active")
            expect(fresh.locator("#domain-aliases")).to_have_text("2")
            expect(fresh.locator("#domain-name")).to_have_text(domain)
            assert shown_records(fresh) == records
            expect(fresh.locator("#domain-alias-form")).to_be_visible()

            fresh.click("#domain-remove-button")
            fresh.click("#domain-remove-no")  # changing one's mind keeps it
            expect(fresh.locator("#domain-remove-confirm")).to_be_hidden()
            assert store.lookup(f"shop-news@{domain}").target == target
            fresh.click("#domain-remove-button")
            fresh.click("#domain-remove-yes")
            expect(fresh.locator("#domain-status")).to_contain_text("Removed")
            expect(fresh.locator("#domain-details")).to_be_hidden()
            with pytest.raises(AliasNotFound):
                store.lookup(f"shop-news@{domain}")
            fresh.reload()
            expect(fresh.locator("#domain-status")).to_contain_text("not registered here")
            assert fresh.script_errors == []
        finally:
            fresh.context.close()
    finally:
        page.context.close()


def domain_status(base: str, domain: str, token: str) -> str:
    request = urllib.request.Request(f"{base}/api/v1/domains/{domain}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["status"]


def test_suspended_domain_says_so_and_check_now_restores_it(page, domains_web, dns_zone,
                                                            let_domain_time_pass):
    domain = "lapsed.example.org"
    records = register_through_page(page, domains_web.http_url, domain)
    publish(dns_zone, records)
    check_now(page)
    expect(page.locator("#domain-state")).to_have_text("Active")
    _, _, token = domain_link_parts(page)

    # The TXT record goes; a day later the service's own check suspends the domain.
    dns_zone.set_records(records[1][1], "TXT", [])
    let_domain_time_pass(domain, 24 * 3600)
    wait_for(lambda: domain_status(domains_web.http_url, domain, token) == "suspended", 15,
             "the janitor to suspend the domain")
    page.reload()
    page.wait_for_selector("html[data-ready]", state="attached")
    expect(page.locator("#domain-state")).to_have_text("Suspended: its records are gone")
    expect(page.locator("#domain-status")).to_contain_text("mail to your aliases is held back")
    expect(page.locator("#records-title")).to_have_text("Put these records back")
    expect(page.locator("#domain-alias-form")).to_be_hidden()

    # DNS that does not answer decides nothing.
    dns_zone.fail(records[1][1], "servfail")
    check_now(page)
    expect(page.locator("#check-summary")).to_contain_text("did not answer in time")
    expect(page.locator("#domain-state")).to_have_text("Suspended: its records are gone")

    dns_zone.clear_records(records[1][1])
    publish(dns_zone, records)
    check_now(page)
    expect(page.locator("#domain-state")).to_have_text("Active")
    expect(page.locator("#domain-alias-form")).to_be_visible()
    assert domain_status(domains_web.http_url, domain, token) == "active"
    assert page.script_errors == []


def test_internationalised_domain_is_shown_in_its_own_letters(browser, page, domains_web):
    domain = "zürich-läden.example.org"
    records = register_through_page(page, domains_web.http_url, domain)
    expect(page.locator("#domain-name")).to_have_text(domain)
    a_label = domain.encode("idna").decode("ascii")
    assert [(rtype, name) for rtype, name, _ in records] == [
        ("MX", a_label), ("TXT", f"_tempalias.{a_label}")]  # what DNS zones hold
    fresh = new_page(browser)
    try:
        open_page(fresh, domains_web.http_url, "#" + urlsplit(
            page.get_attribute("#domain-link", "href")).fragment)
        expect(fresh.locator("#domain-state")).to_have_text("Waiting for its DNS records")
        expect(fresh.locator("#domain-name")).to_have_text(domain)
        assert shown_records(fresh) == records
    finally:
        fresh.context.close()


def test_domain_link_with_a_wrong_token_shows_nothing(browser, page, domains_web):
    domain = "wrong-token.example.org"
    records = register_through_page(page, domains_web.http_url, domain)
    stranger = new_page(browser)
    try:
        open_page(stranger, domains_web.http_url, f"#domain/{domain}/not-the-token")
        expect(stranger.locator("#domain-status")).to_contain_text("not registered here")
        expect(stranger.locator("#domain-details")).to_be_hidden()
        assert records[1][2] not in stranger.content()
    finally:
        stranger.context.close()


def test_domain_registration_errors_are_shown_next_to_the_field(page, domains_web):
    posts = []
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    open_page(page, domains_web.http_url, "#your-domain")
    page.click("#own-button")
    expect(page.locator("#own-domain-error")).to_have_text("Enter the domain you want aliases at.")
    page.fill("#own-domain", "me@temp.example.org")
    page.click("#own-button")
    expect(page.locator("#own-domain-error")).to_have_text(
        "Enter a domain name only, such as temp.example.org.")
    page.fill("#own-domain", "mail.second.test")
    page.click("#own-button")
    expect(page.locator("#own-domain-error")).to_contain_text("one of tempalias's own domains")
    assert page.get_attribute("#own-domain", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "own-domain"
    assert posts == []  # checked before submit: nothing was sent


# --- looks, accessibility, size


def _axe(page: Page) -> tuple[list[dict], set[str]]:
    """axe-core's WCAG 2.1 A/AA violations, and the ids of the rules that found nothing wrong."""
    if not page.evaluate("typeof window.axe") == "object":
        page.add_script_tag(content=axe_source())
    result = page.evaluate("""async () => {
        const result = await axe.run(document, {runOnly: ["wcag2a", "wcag2aa", "wcag21aa"]});
        return {passes: result.passes.map(v => v.id),
                violations: result.violations.map(v => ({id: v.id, help: v.help,
                    nodes: v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary)}))};
    }""")
    return result["violations"], set(result["passes"])


def _axe_violations(page: Page) -> list[dict]:
    return _axe(page)[0]


def screenshot(page: Page, name: str) -> dict:
    """A full-page screenshot, kept in test-artifacts/, decoded by the browser itself in a blank
    page: its size, the page's size it should have, its distinct colours, its mean luminance."""
    png = page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    page_size = page.evaluate("[document.documentElement.scrollWidth, "
                              "document.documentElement.scrollHeight]")
    return {**decoded_png(page.context, png), "page_size": page_size}


def assert_seen_whole(shot: dict, scheme: str) -> None:
    """What a user would see: the whole page, with text on it, in the colours of its scheme."""
    assert [shot["width"], shot["height"]] == shot["page_size"], shot
    assert shot["colours"] > 100, shot  # text and controls, not a blank or one-colour page
    assert (shot["luminance"] < 0.4) if scheme == "dark" else (shot["luminance"] > 0.6), shot


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 390])
def test_screenshots_and_accessibility(browser, web, scheme, width):
    ARTIFACTS.mkdir(exist_ok=True)
    # axe-core goes in as an inline script, which the page's own CSP would rightly refuse.
    page = new_page(browser, width=width, scheme=scheme, bypass_csp=True)
    try:
        open_page(page, web.http_url)
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
        violations, passed = _axe(page)
        assert violations == []
        assert {"label", "color-contrast"} <= passed  # the checks ran on real nodes
        assert_seen_whole(screenshot(page, f"frontend-{scheme}-{width}"), scheme)

        # The error states have to be readable too.
        page.fill("#target", "")
        page.fill("#days", "999")
        page.click("#create-button")
        expect(page.locator("#days-error")).not_to_be_empty()
        assert _axe_violations(page) == []
        assert_seen_whole(screenshot(page, f"frontend-{scheme}-{width}-errors"), scheme)

        page.locator("#replies").check()
        create_through_form(page, unique_target())
        expect(page.locator("#result-replies")).to_have_text("Replies through this alias: on")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert _axe_violations(page) == []
        assert_seen_whole(screenshot(page, f"frontend-{scheme}-{width}-result"), scheme)

        _, alias_id, token = manage_parts(page)
        open_page(page, web.http_url, f"#manage/{alias_id}/{token}")
        expect(page.locator("#manage-details")).to_be_visible()
        expect(page.locator("#manage-replies")).to_have_text("on")
        assert _axe_violations(page) == []
        assert_seen_whole(screenshot(page, f"frontend-{scheme}-{width}-manage"), scheme)
        assert page.script_errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 390])
def test_domain_views_screenshots_and_accessibility(browser, domains_web, dns_zone, store, scheme,
                                                    width):
    """Every state of the picker and of the own-domain views, seen and checked by axe."""
    ARTIFACTS.mkdir(exist_ok=True)
    domain = f"{scheme}-{width}.example.org"
    page = new_page(browser, width=width, scheme=scheme, bypass_csp=True)
    pages = [page]

    def looks_right(shown: Page, name: str) -> None:
        assert shown.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
        assert _axe_violations(shown) == []
        assert_seen_whole(screenshot(shown, f"frontend-{scheme}-{width}-{name}"), scheme)

    try:
        open_page(page, domains_web.http_url)
        expect(page.locator("#field-domain")).to_be_visible()
        looks_right(page, "picker")

        page.click("nav >> text=Own domain")
        page.fill("#own-domain", "not a domain")
        page.click("#own-button")
        expect(page.locator("#own-domain-error")).not_to_be_empty()
        looks_right(page, "own-domain")

        page.fill("#own-domain", domain)
        page.click("#own-button")
        records = shown_records(page)
        check_now(page)
        expect(page.locator("#check-problems li")).to_have_count(2)
        looks_right(page, "domain-pending")

        publish(dns_zone, records)
        check_now(page)
        expect(page.locator("#domain-alias-form")).to_be_visible()
        page.fill("#own-local", "no spaces please")
        page.fill("#own-target", "")
        page.click("#domain-alias-button")
        expect(page.locator("#own-local-error")).not_to_be_empty()
        looks_right(page, "domain-active")

        page.fill("#own-local", "newsletters")
        page.fill("#own-target", unique_target())
        expect(page.locator("#own-replies")).to_have_accessible_name(REPLIES_LABEL)
        page.locator("#own-replies").check()  # the own-domain form's own checkbox
        page.click("#domain-alias-button")
        expect(page.locator("#domain-alias-result")).to_be_visible()
        expect(page.locator("#domain-alias-replies")).to_have_text(
            "Replies through this alias: on")
        assert store.lookup(f"newsletters@{domain}").replies
        looks_right(page, "domain-alias")
        assert page.script_errors == []

        fresh = new_page(browser, width=width, scheme=scheme, bypass_csp=True)
        pages.append(fresh)
        open_page(fresh, domains_web.http_url,
                  "#" + urlsplit(page.get_attribute("#domain-link", "href")).fragment)
        expect(fresh.locator("#domain-aliases")).to_have_text("1")
        fresh.click("#domain-remove-button")
        expect(fresh.locator("#domain-remove-confirm")).to_be_visible()
        looks_right(fresh, "domain-manage")
        assert fresh.script_errors == []
    finally:
        for shown in pages:
            shown.context.close()


def test_focus_is_visible(page, web):
    open_page(page, web.http_url)
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"


# --- what the server sends


def _get(url: str) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()


def test_every_file_is_small_and_cacheable(web):
    served = {"/": "index.html", "/bookmarklet.js": "bookmarklet.js"}
    served.update({f"/static/{path.name}": path.name for path in STATIC.iterdir() if path.is_file()})
    for url_path in served:
        status, headers, body = _get(web.http_url + url_path)
        assert status == 200, url_path
        assert len(body) < 50 * 1024, url_path
        assert "set-cookie" not in headers
        assert headers["x-content-type-options"] == "nosniff"
        expected = "no-cache" if url_path == "/" else "public, max-age=600"
        assert headers["cache-control"] == expected, url_path
        if url_path.endswith(".js"):
            assert headers["content-type"].startswith("text/javascript"), url_path
    page_headers = _get(web.http_url + "/")[1]
    assert page_headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self';" in page_headers["content-security-policy"]
    assert _get(web.http_url + "/bookmarklet.js")[1]["access-control-allow-origin"] == "*"


def test_every_page_and_file_carries_the_page_security_headers(web):
    """/static/index.html is the page too: whichever URL serves it, the same protection."""
    urls = ["/", "/config.js", "/bookmarklet.js"]
    urls += [f"/static/{path.name}" for path in STATIC.iterdir() if path.is_file()]
    page_headers = _get(web.http_url + "/")[1]
    for url_path in urls:
        headers = _get(web.http_url + url_path)[1]
        for name in ("content-security-policy", "referrer-policy", "x-content-type-options"):
            assert headers.get(name) == page_headers[name], (url_path, name)


def test_config_js_tells_the_page_limits_and_public_url(service_factory, web):
    _, headers, body = _get(web.http_url + "/config.js")
    assert headers["cache-control"] == "no-cache"
    assert f'"publicUrl": "{web.http_url}"' in body.decode()  # default: http://<http_listen>

    other = service_factory(env={"TEMPALIAS_PUBLIC_URL": "https://aliases.example.net/",
                                 "TEMPALIAS_MAX_DAYS": "30", "TEMPALIAS_MAX_USES": "9",
                                 "TEMPALIAS_DOMAINS": "mail.example.net"})
    try:
        text = _get(other.http_url + "/config.js")[2].decode()
        settings = json.loads(re.search(r"Object\.freeze\((\{.*\})\);", text, re.S).group(1))
        assert settings == {"publicUrl": "https://aliases.example.net", "domain": "mail.example.net",
                            "maxDays": 30, "maxUses": 9, "defaultDays": 7}
    finally:
        other.stop()


def test_page_shows_the_limits_the_server_enforces(service_factory, browser):
    other = service_factory(env={"TEMPALIAS_MAX_DAYS": "12", "TEMPALIAS_MAX_USES": "40",
                                 "TEMPALIAS_DEFAULT_DAYS": "4"})
    page = new_page(browser)
    try:
        open_page(page, other.http_url)
        expect(page.locator("#days-hint")).to_have_text("1 to 12 days.")
        expect(page.locator("#uses-hint")).to_contain_text("1 to 40;")
        expect(page.locator("#days")).to_have_value("4")
        page.fill("#target", unique_target())
        page.fill("#days", "13")
        page.click("#create-button")
        expect(page.locator("#days-error")).to_have_text(
            "Choose a whole number of days from 1 to 12.")
    finally:
        page.context.close()
        other.stop()
