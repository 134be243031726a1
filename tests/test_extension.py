"""The browser extension (issue 17): `tempalias extension`, the page's download, web-ext's lint of
the Firefox build, and the extension itself, loaded unpacked into Debian's Chromium (new headless
mode) on a third-party sign-up page served from loopback, against a running tempalias.

What the extension made is looked up through the REST API with the token the extension holds,
read from its own storage in its own page, as its popup reads it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

from frontend_browser import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LIMITED_ON_LOOPBACK, axe_source,
                              decoded_png, third_party_site)

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "extension"
WEB_EXT = Path(__file__).resolve().parent / "frontend_node" / "node_modules" / ".bin" / "web-ext"
ALIAS_ADDRESS = re.compile(r"^([a-z0-9]{4,32})@tempalias\.test$")
TIMEOUT_MS = 15_000
# Extensions run in Chromium's new headless mode, which Playwright leaves alone only when told the
# browser is headful: the flag is ours, the other no-phone-home flags the page tests' own.
EXTENSION_ARGS = ["--headless=new", *(arg for arg in CHROMIUM_ARGS if arg != "--headless")]
BUTTON = "[data-tempalias-fill]"
NOTE = "tempalias-fill .note"  # Playwright's CSS reaches into the button's open shadow root


def tempalias(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command as an operator runs it, in a process of its own (it monkey-patches)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEMPALIAS_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "tempalias", *args], env=environment, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def build_extension(out: Path, env: dict[str, str], browser: str = "chromium") -> Path:
    written = tempalias("extension", "--out", str(out), "--browser", browser, env=env)
    assert written.returncode == 0, written.stderr
    return out


def settings_of(service) -> dict[str, str]:
    """A running service's settings, its URL as the public one: what its operator would run
    `tempalias extension` with."""
    own = {name: value for name, value in service.env.items() if name.startswith("TEMPALIAS_")}
    return {**own, "TEMPALIAS_PUBLIC_URL": service.http_url}


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def unique_target() -> str:
    """Each alias order its own target: the per-target limit lives in the session's Redis."""
    return f"reader-{uuid.uuid4().hex[:10]}@example.org"


def api_create(base: str, target: str) -> dict:
    answer = requests.post(base + "/api/v1/aliases", json={"target": target, "days": 1},
                           timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def api_show(base: str, record: dict) -> requests.Response:
    return requests.get(f"{base}/api/v1/aliases/{record['id']}", timeout=10,
                        headers={"Authorization": f"Bearer {record['token']}"})


# --- Chromium with the extension


class ExtensionBrowser:
    """Chromium with one unpacked extension, in a profile of its own."""

    def __init__(self, context, worker) -> None:
        self.context = context
        self.worker = worker  # the extension's service worker
        self.id = urlsplit(worker.url).netloc
        self.base = f"chrome-extension://{self.id}"
        # Any page of the extension reads its storage; not the options, which the extension
        # opens itself (a browser shows an open options page again rather than a second one).
        self.storage_page = self.extension_page("popup.html")

    def new_page(self) -> Page:
        """A tab that records its script errors and any dialog (an error must never be one)."""
        page = self.context.new_page()
        page.script_errors = []
        page.dialogs = []
        page.on("pageerror", lambda error: page.script_errors.append(str(error)))
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        return page

    def extension_page(self, name: str) -> Page:
        page = self.new_page()
        page.goto(f"{self.base}/{name}")
        page.wait_for_selector("html[data-ready]", state="attached")
        return page

    def set_options(self, **options) -> None:
        """What the options page saves, written as it writes it (store.js)."""
        self.storage_page.evaluate("options => chrome.storage.local.set({options})",
                                   {"target": "", "days": 7, "uses": None, "domain": None,
                                    **options})

    def clear_options(self) -> None:
        self.storage_page.evaluate("chrome.storage.local.remove('options')")

    def aliases(self) -> list[dict]:
        """The records the extension keeps, tokens and all."""
        stored = self.storage_page.evaluate("chrome.storage.local.get(null)")
        return [record for key, record in stored.items() if key.startswith("alias:")]

    def record_of(self, address: str) -> dict:
        [record] = [record for record in self.aliases() if record["address"] == address]
        return record


@contextlib.contextmanager
def launched(playwright, extension: Path, scale: int = 1):
    """Chromium with ``extension`` loaded unpacked (Playwright's default switches extensions off),
    at ``scale`` device pixels per CSS pixel."""
    with tempfile.TemporaryDirectory(prefix="tempalias-profile-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=False,
            ignore_default_args=["--disable-extensions"],
            args=[*EXTENSION_ARGS, f"--disable-extensions-except={extension}",
                  f"--load-extension={extension}"],
            viewport={"width": 900, "height": 640}, device_scale_factor=scale,
            color_scheme="light")
        try:
            context.set_default_timeout(TIMEOUT_MS)
            worker = (context.service_workers[0] if context.service_workers
                      else context.wait_for_event("serviceworker", timeout=TIMEOUT_MS))
            yield ExtensionBrowser(context, worker)
        finally:
            context.close()


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def web(service_factory):
    """tempalias with its rate limits on loopback, two new aliases per target address a day: the
    refusals the extension shows are the service's own."""
    return service_factory(env={**LIMITED_ON_LOOPBACK, "TEMPALIAS_CREATE_DAILY_PER_TARGET": "2/1d"})


@pytest.fixture(scope="module")
def extension(web, tmp_path_factory):
    """The unpacked extension for ``web``, as `tempalias extension --out` writes it."""
    return build_extension(tmp_path_factory.mktemp("extension") / "chromium", settings_of(web))


@pytest.fixture(scope="module")
def chromium(playwright, extension):
    with launched(playwright, extension) as browser:
        yield browser


@pytest.fixture(scope="module")
def third_party():
    with third_party_site() as origin:
        yield origin


def fill_through_button(page: Page) -> str:
    page.locator(BUTTON).click()
    email = page.locator("#email")
    expect(email).to_have_value(ALIAS_ADDRESS)
    return email.input_value()


# --- the command and the download


def test_the_command_writes_the_extension_for_this_servers_public_url(tmp_path):
    public = "https://aliases.example.net"
    env = {"TEMPALIAS_PUBLIC_URL": public + "/", "TEMPALIAS_DOMAINS": "mail.example.net",
           "TEMPALIAS_MAX_DAYS": "30", "TEMPALIAS_MAX_USES": "9"}
    written = tempalias("extension", "--out", str(tmp_path / "chromium"), "--zip",
                        str(tmp_path / "chromium.zip"), env=env)
    assert written.returncode == 0, written.stderr
    assert written.stdout == (f"wrote the chromium extension for {public}: {tmp_path}/chromium "
                              f"(unpacked), {tmp_path}/chromium.zip\n")
    unpacked = files_of(tmp_path / "chromium")
    with zipfile.ZipFile(tmp_path / "chromium.zip") as packed:
        assert {name: packed.read(name) for name in packed.namelist()} == unpacked
    source = files_of(SOURCE)
    assert set(unpacked) == set(source)
    assert {name for name in source if unpacked[name] != source[name]} == {"manifest.json",
                                                                           "config.js"}
    manifest = json.loads(unpacked["manifest.json"])
    assert manifest["host_permissions"] == ["https://aliases.example.net/*"]  # that origin alone
    assert manifest["permissions"] == ["storage", "contextMenus", "activeTab", "scripting"]
    assert manifest["background"] == {"service_worker": "background.js", "type": "module"}
    assert "browser_specific_settings" not in manifest
    version = tempalias("--version").stdout.split()[1]
    assert manifest["version"] == version
    config = unpacked["config.js"].decode()
    settings = json.loads(re.search(r"Object\.freeze\((\{.*\})\);", config, re.S).group(1))
    assert settings == {"publicUrl": public, "domain": "mail.example.net", "maxDays": 30,
                        "maxUses": 9, "defaultDays": 7}

    firefox = tempalias("extension", "--browser", "firefox", "--zip", str(tmp_path / "ff.zip"),
                        env=env)
    assert firefox.returncode == 0, firefox.stderr
    with zipfile.ZipFile(tmp_path / "ff.zip") as packed:
        manifest = json.loads(packed.read("manifest.json"))
    assert manifest["background"] == {"scripts": ["background.js"], "type": "module"}
    assert manifest["browser_specific_settings"]["gecko"]["id"] == "tempalias@aliases.example.net"
    assert manifest["browser_specific_settings"]["gecko"]["data_collection_permissions"] == {
        "required": ["none"]}

    # Written again for another server into the same place: the earlier output is replaced.
    (tmp_path / "chromium" / "content.js").write_text("// an older version's file\n")
    again = tempalias("extension", "--out", str(tmp_path / "chromium"),
                      env={**env, "TEMPALIAS_PUBLIC_URL": "http://127.0.0.1:8123"})
    assert again.returncode == 0, again.stderr
    rewritten = files_of(tmp_path / "chromium")
    assert rewritten["content.js"] == source["content.js"]
    assert json.loads(rewritten["manifest.json"])["host_permissions"] == ["http://127.0.0.1/*"]


def test_the_command_refuses_bad_places_and_an_unknown_url_in_one_line(tmp_path):
    env = {"TEMPALIAS_PUBLIC_URL": "https://aliases.example.net"}
    someone_elses = tmp_path / "photos"
    someone_elses.mkdir()
    (someone_elses / "holiday.jpg").write_bytes(b"not ours")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    refusals = {
        ("--out", str(someone_elses)): "is not empty and is not an earlier `tempalias extension` "
                                       "output",
        ("--out", str(a_file)): "is a file, not a directory",
        ("--zip", str(tmp_path / "missing" / "x.zip")): "does not exist",
        ("--zip", str(someone_elses)): "is a directory",
    }
    for args, words in refusals.items():
        refused = tempalias("extension", *args, env=env)
        assert refused.returncode == 2, args
        assert refused.stderr.count("\n") == 1 and words in refused.stderr, refused.stderr
        assert refused.stdout == ""
    assert (someone_elses / "holiday.jpg").read_bytes() == b"not ours"
    assert list(someone_elses.iterdir()) == [someone_elses / "holiday.jpg"]
    assert a_file.read_text() == "mine\n"

    unknown = tempalias("extension", "--out", str(tmp_path / "new"),
                        env={"TEMPALIAS_HTTP_LISTEN": "0.0.0.0:8080"})
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "set TEMPALIAS_PUBLIC_URL" in unknown.stderr
    assert not (tmp_path / "new").exists()
    nowhere = tempalias("extension", env=env)
    assert nowhere.returncode == 2 and nowhere.stderr.splitlines()[-1].endswith(
        "extension writes to --out DIR, --zip FILE or both: name one")


def test_web_ext_lint_passes_for_the_firefox_build(tmp_path):
    if not WEB_EXT.exists():
        raise AssertionError(f"{WEB_EXT} is missing: `make test` (or `make frontend-node`) "
                             "installs it")
    firefox = build_extension(tmp_path / "firefox",
                              {"TEMPALIAS_PUBLIC_URL": "https://aliases.example.net"}, "firefox")
    linted = subprocess.run(
        [str(WEB_EXT), "lint", "--source-dir", str(firefox), "--output", "json",
         "--no-config-discovery"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_UPDATE_NOTIFIER": "1"})
    report = json.loads(linted.stdout)
    assert linted.returncode == 0, linted.stdout
    assert (report["errors"], report["warnings"], report["notices"]) == ([], [], [])
    assert report["metadata"]["manifestVersion"] == 3


def test_the_page_offers_the_extension_next_to_the_bookmarklet(chromium, web, extension):
    page = chromium.new_page()
    page.goto(web.http_url + "/")
    page.wait_for_selector("html[data-ready]", state="attached")
    page.fill("#target", unique_target())
    page.click("#create-button")
    offer = page.locator("#extension-offer")
    expect(offer).to_be_visible()
    expect(page.locator("#bookmarklet-link")).to_be_visible()  # the two side by side
    expect(offer).to_contain_text("How to install")
    # No button of ours on tempalias's own page: its email field takes the real address. By now
    # (an alias made through the form) its content script had its answer long ago.
    expect(page.locator(BUTTON)).to_have_count(0)

    for browser, link in (("chromium", "Chromium or Chrome"), ("firefox", "Firefox")):
        with page.expect_download() as download:
            offer.get_by_role("link", name=link).click()
        assert download.value.suggested_filename == f"tempalias-{browser}.zip"
        answer = requests.get(f"{web.http_url}/extension/tempalias-{browser}.zip", timeout=10)
        assert answer.headers["content-type"] == "application/zip"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert Path(download.value.path()).read_bytes() == answer.content
        with zipfile.ZipFile(io.BytesIO(answer.content)) as packed:
            served = {name: packed.read(name) for name in packed.namelist()}
        if browser == "chromium":
            assert served == files_of(extension)  # what `tempalias extension --out` writes
        else:
            manifest = json.loads(served["manifest.json"])
            assert manifest["host_permissions"] == [host_pattern(web.http_url)]
            assert "gecko" in manifest["browser_specific_settings"]
    assert page.script_errors == []


def host_pattern(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.hostname}/*"


# --- the extension on somebody else's page


def test_the_button_fills_a_sign_up_field_and_the_popup_manages_the_alias(chromium, web,
                                                                        third_party):
    chromium.context.grant_permissions(["clipboard-read", "clipboard-write"])
    target = unique_target()
    options = chromium.extension_page("options.html")
    options.fill("#target", target)
    options.fill("#days", "0")
    options.click("#save-button")
    expect(options.locator("#days-error")).to_have_text(
        "Choose a whole number of days from 1 to 60.")
    options.fill("#days", "3")
    options.fill("#uses", "5")
    options.click("#save-button")
    expect(options.locator("#status")).to_have_text(
        f"Saved. New aliases forward to {target}, for 3 days or 5 messages, whichever comes first.")

    page = chromium.new_page()
    page.goto(third_party + "/signup")
    button = page.locator(BUTTON)
    expect(button).to_have_count(1)  # the email field's: "Name" is no email field
    expect(button).to_be_visible()
    field, shown = page.locator("#email").bounding_box(), button.bounding_box()
    assert field["x"] + field["width"] / 2 < shown["x"]  # inside the field's right edge
    assert shown["x"] + shown["width"] <= field["x"] + field["width"]
    assert field["y"] <= shown["y"] and shown["y"] + shown["height"] <= field["y"] + field["height"]

    address = fill_through_button(page)
    assert page.evaluate("window.shopEvents") == [f"input:{address}", f"change:{address}"]
    expect(page.locator("#seen")).to_have_text(f"the shop saw {address}")

    record = chromium.record_of(address)
    assert record["site"] == urlsplit(third_party).netloc
    answer = api_show(web.http_url, record)
    assert answer.status_code == 200
    alias = answer.json()
    assert (alias["address"], alias["target"], alias["uses_left"]) == (address, target, 5)
    lifetime = (datetime.fromisoformat(alias["expires_at"].replace("Z", "+00:00"))
                - datetime.fromisoformat(alias["created_at"].replace("Z", "+00:00")))
    assert timedelta(days=3) - timedelta(minutes=1) <= lifetime <= timedelta(days=3)

    popup = chromium.extension_page("popup.html")
    row = popup.locator(f"li.alias[data-alias-id='{record['id']}']")
    expect(row.locator(".address")).to_have_text(address)
    expect(row.locator(".site")).to_have_text(f"made on {urlsplit(third_party).netloc}")
    expect(row.locator(".days")).to_have_text("3 days left")
    expect(row.locator(".uses")).to_have_text("5 messages left")
    expect(popup.locator("#no-target")).to_be_hidden()

    row.get_by_role("button", name="Copy").click()
    expect(row.locator(".row-status")).to_have_text(f"{address} is on your clipboard.")
    assert popup.evaluate("navigator.clipboard.readText()") == address

    row.get_by_role("button", name="Revoke…").click()
    expect(row.locator(".confirm")).to_contain_text(f"Mail to {address} will be refused")
    row.get_by_role("button", name="Keep it").click()  # changing one's mind keeps it
    assert api_show(web.http_url, record).status_code == 200
    row.get_by_role("button", name="Revoke…").click()
    row.get_by_role("button", name="Revoke now").click()
    expect(row).to_have_count(0)
    expect(popup.locator("#status")).to_have_text(
        f"Revoked {address}: mail to it is refused from now on.")
    assert api_show(web.http_url, record).status_code == 404
    assert all(kept["id"] != record["id"] for kept in chromium.aliases())
    for shown_page in (options, page, popup):
        assert (shown_page.script_errors, shown_page.dialogs) == ([], [])
        shown_page.close()


def test_the_context_menu_fills_the_field_under_the_cursor(chromium, web, third_party):
    chromium.set_options(target=unique_target(), days=2)
    page = chromium.new_page()
    page.goto(third_party + "/signup")
    expect(page.locator(BUTTON)).to_have_count(1)
    # The entry exists (updating an unknown one fails), on editable fields.
    chromium.worker.evaluate("chrome.contextMenus.update('tempalias-fill', {})")

    page.click("#name", button="right")  # a text field that is no email field: no button there
    # Headless Chromium draws no menu to click: the browser's click event is delivered to the
    # extension's own listener instead, with the menu's information about the tab and frame.
    chromium.worker.evaluate("""async (url) => {
        const [tab] = await chrome.tabs.query({url});
        chrome.contextMenus.onClicked.dispatch(
            {menuItemId: "tempalias-fill", frameId: 0, editable: true, pageUrl: url}, tab);
    }""", page.url)
    expect(page.locator("#name")).to_have_value(ALIAS_ADDRESS)
    expect(page.locator("#email")).to_have_value("")
    record = chromium.record_of(page.locator("#name").input_value())
    assert api_show(web.http_url, record).json()["uses_left"] is None
    assert (page.script_errors, page.dialogs) == ([], [])
    page.close()


def test_refusals_are_shown_next_to_the_button_and_the_field_is_left_alone(chromium, web,
                                                                         third_party):
    chromium.clear_options()
    page = chromium.new_page()
    page.goto(third_party + "/signup")
    page.fill("#email", "typed@shop.example")
    note = page.locator(NOTE)

    page.locator(BUTTON).click()
    expect(note).to_be_visible()
    expect(note.locator(".text")).to_have_text("Set the address your aliases forward to first.")
    with chromium.context.expect_page() as opened:
        note.get_by_role("button", name="Open the tempalias options").click()
    expect(opened.value).to_have_url(f"{chromium.base}/options.html")
    opened.value.close()
    note.get_by_role("button", name="Close").click()
    expect(note).to_be_hidden()

    target = unique_target()
    for _ in range(2):  # the two this target may have today
        api_create(web.http_url, target)
    chromium.set_options(target=target, days=2)
    page.locator(BUTTON).click()
    # The server's reason, and its Retry-After in words: the bucket refills one alias in 12 hours.
    expect(note.locator(".text")).to_have_text(
        "Too many new aliases for this target address; try again in 12 hours.")
    expect(note.get_by_role("button", name="Open the tempalias options")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    shot(page, around(page, "label[for=email]", NOTE), "extension-refusal-1x", 1)
    expect(page.locator("#email")).to_have_value("typed@shop.example")
    # The shop saw the typing (and its change on the tab switch), never a value of ours.
    assert {event.split(":", 1)[1] for event in page.evaluate("window.shopEvents")} == {
        "typed@shop.example"}
    assert (page.script_errors, page.dialogs) == ([], [])
    page.close()


def test_a_listed_network_and_an_unreachable_server_are_shown_next_to_the_button(
        playwright, service_factory, dns_zone, third_party, tmp_path):
    zone = f"rbl{secrets.token_hex(4)}.test"
    dns_zone.set_records(f"1.0.0.127.{zone}", "A", ["127.0.0.2"])  # 127.0.0.1 is listed there
    listed = service_factory(env={"TEMPALIAS_TRUSTED_NETWORKS": "", "TEMPALIAS_RBL_ZONES": zone})
    extension = build_extension(tmp_path / "extension", settings_of(listed))
    with launched(playwright, extension) as browser:
        browser.set_options(target=unique_target(), days=1)
        page = browser.new_page()
        page.goto(third_party + "/signup")
        note = page.locator(NOTE).locator(".text")
        page.locator(BUTTON).click()
        expect(note).to_have_text(f"Your network is on a spam block list (127.0.0.1 listed in "
                                  f"{zone}), so tempalias makes no aliases for it.")

        listed.stop()
        page.locator(BUTTON).click()
        expect(note).to_have_text(f"tempalias ({urlsplit(listed.http_url).netloc}) could not be "
                                  "reached. Is the server up, and are you online?")
        expect(page.locator("#email")).to_have_value("")
        assert page.evaluate("window.shopEvents") == []
        assert (page.script_errors, page.dialogs) == ([], [])


SEEN_BY_THE_PAGE = """() => {
    const seen = [document.documentElement.outerHTML, document.cookie,
                  JSON.stringify(Object.entries(localStorage)),
                  JSON.stringify(Object.entries(sessionStorage)),
                  JSON.stringify(window.shopEvents), JSON.stringify(window.spied)];
    for (const element of document.querySelectorAll("*")) {
        if (element.shadowRoot) seen.push(element.shadowRoot.innerHTML);
        if ("value" in element) seen.push(String(element.value));
    }
    return seen.join("\\n");
}"""


def test_a_page_that_wraps_fetch_learns_nothing_of_the_token_or_the_target(chromium, web,
                                                                        third_party):
    target = unique_target()
    chromium.set_options(target=target, days=2, uses=3)
    page = chromium.new_page()
    page.goto(third_party + "/spy")
    globals_before = set(page.evaluate("Object.getOwnPropertyNames(window)"))

    address = fill_through_button(page)
    token = chromium.record_of(address)["token"]
    assert len(token) >= 16
    assert page.evaluate("window.spied") == []  # nothing went through the page's fetch & co.
    loaded = page.evaluate("performance.getEntriesByType('resource').map(entry => entry.name)")
    assert not [url for url in loaded if url.startswith(web.http_url)]
    seen = page.evaluate(SEEN_BY_THE_PAGE)
    assert address in seen  # what the page may know, it does see
    assert token not in seen and target not in seen
    assert set(page.evaluate("Object.getOwnPropertyNames(window)")) == globals_before
    assert (page.script_errors, page.dialogs) == ([], [])
    page.close()



def test_the_page_itself_cannot_press_the_button(chromium, web, third_party):
    """The button sits in an open shadow root the page can reach; only a person's click makes an
    alias, not the page's own .click() or a dispatched event (they would spend the owner's
    limits and fill the popup, at the page's will)."""
    chromium.set_options(target=unique_target(), days=1)
    page = chromium.new_page()
    page.goto(third_party + "/signup")
    made_before = len(chromium.aliases())
    page.locator(BUTTON).wait_for()
    # A click that is taken starts the request at once, before its first await: the button is
    # aria-busy within the same turn. So each untrusted click is seen refused right after it.
    busy = page.evaluate("""() => {
        const button = document.querySelector("tempalias-fill").shadowRoot
            .querySelector("[data-tempalias-fill]");
        button.click();
        const afterClick = button.getAttribute("aria-busy");
        button.dispatchEvent(new MouseEvent("click", {bubbles: true, composed: true}));
        return [afterClick, button.getAttribute("aria-busy")];
    }""")
    assert busy == [None, None]
    assert page.locator("#email").input_value() == ""
    fill_through_button(page)  # a person's click still works
    assert len(chromium.aliases()) == made_before + 1
    assert (page.script_errors, page.dialogs) == ([], [])
    page.close()


LAYOUT = """() => [...document.body.querySelectorAll("*")]
    .map(element => JSON.stringify(element.getBoundingClientRect()))"""


def test_the_button_keeps_its_look_and_the_pages_layout_on_a_strict_page(chromium, web,
                                                                         third_party):
    """/strict forbids every script and style not its own, and its CSS sets every div, p and
    button in red at 40px with !important: neither reaches the button, which changes nothing of
    the page's layout, and works there as anywhere."""
    chromium.set_options(target=unique_target(), days=1)
    page = chromium.new_page()
    page.goto(third_party + "/strict")
    button = page.locator(BUTTON)
    expect(button).to_be_visible()
    box = button.bounding_box()
    assert (round(box["width"]), round(box["height"])) == (22, 22)
    assert button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(15, 107, 92)"
    with_button = page.evaluate(LAYOUT)
    hosts = page.evaluate("""() => {
        const hosts = [...document.querySelectorAll("tempalias-fill")];
        hosts.forEach(host => host.remove());
        return hosts.length;
    }""")
    assert hosts == 1 and page.evaluate(LAYOUT) == with_button
    page.reload()
    address = fill_through_button(page)
    assert page.evaluate("window.shopEvents") == [f"input:{address}", f"change:{address}"]
    assert page.script_errors == []
    page.close()


# --- what it looks like


def axe_violations(page: Page) -> list[dict]:
    """axe-core's WCAG 2.1 A/AA violations; evaluated, since the extension's pages run no inline
    script."""
    page.evaluate(axe_source())
    return page.evaluate("""async () => (await axe.run(document,
        {runOnly: ["wcag2a", "wcag2aa", "wcag21aa"]})).violations.map(v => ({id: v.id,
        nodes: v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary)}))""")


def around(page: Page, *selectors: str, margin: int = 12) -> dict:
    """The part of the page that holds these elements, with a margin: a screenshot's clip."""
    boxes = [page.locator(selector).bounding_box() for selector in selectors]
    left = max(0, min(box["x"] for box in boxes) - margin)
    top = max(0, min(box["y"] for box in boxes) - margin)
    right = max(box["x"] + box["width"] for box in boxes) + margin
    bottom = max(box["y"] + box["height"] for box in boxes) + margin
    return {"x": left, "y": top, "width": right - left, "height": bottom - top}


def shot(page: Page, clip: dict, name: str, scale: int) -> None:
    """A screenshot of ``clip``, kept in test-artifacts/, as a person would see it: the part whole
    at this scale, with text and controls on it, light."""
    png = page.screenshot(path=ARTIFACTS / f"{name}.png", clip=clip)
    seen = decoded_png(page.context, png)
    assert abs(seen["width"] - clip["width"] * scale) <= scale + 1, (seen, clip)
    assert abs(seen["height"] - clip["height"] * scale) <= scale + 1, (seen, clip)
    assert seen["colours"] > 40 and seen["luminance"] > 0.6, seen


@pytest.mark.parametrize("scale", [1, 2])
def test_screenshots_of_the_field_and_the_popup(playwright, extension, web, third_party, scale):
    ARTIFACTS.mkdir(exist_ok=True)
    with launched(playwright, extension, scale=scale) as browser:
        browser.set_options(target=unique_target(), days=7, uses=10)
        page = browser.new_page()
        for _ in range(2):  # two aliases in the popup's list
            page.goto(third_party + "/signup")
            address = fill_through_button(page)
        shot(page, around(page, "label[for=name]", "#email"), f"extension-field-{scale}x", scale)

        popup = browser.extension_page("popup.html")
        expect(popup.locator("li.alias")).to_have_count(2)
        expect(popup.locator("li.alias").first.locator(".address")).to_have_text(address)
        expect(popup.locator("li.alias .uses")).to_have_text(["10 messages left"] * 2)
        shot(popup, popup.locator("body").bounding_box(), f"extension-popup-{scale}x", scale)
        if scale == 1:
            assert axe_violations(popup) == []
            assert axe_violations(browser.extension_page("options.html")) == []
        assert popup.script_errors == []
