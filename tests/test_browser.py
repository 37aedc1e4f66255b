"""The admin end to end, in headless Chromium: what a person sees after Morph has called.

Uses Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-browser.sh``) and is skipped
without them; nothing is ever downloaded. The browser and the webhooks only talk to the live
server on 127.0.0.1. A screenshot of each step is saved in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import django.contrib.admin
import pytest
from django.conf import settings
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone

from morph_webhooks.admin.filters import CONNECTION_CHOICES
from morph_webhooks.models import Company, Connection, Opportunity, WebhookDelivery
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import (
    engagement_event,
    morph_headers,
    opportunity_event,
    reference,
    resource_event,
)
from morph_webhooks.testing.factories import WebhookDeliveryFactory
from tests.helpers import raising_receiver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER}: run scripts/install-browser.sh",
    ),
    pytest.mark.django_db(transaction=True),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
ADMIN_STATIC = Path(django.contrib.admin.__file__).parent / "static"
# A laptop's width: every list fits it without scrolling sideways.
WIDTH, HEIGHT = 1400, 900
WAIT = 10  # seconds; every wait ends as soon as its condition holds

CHROMIUM_ARGUMENTS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers have a small /dev/shm
    f"--window-size={WIDTH},{HEIGHT}",
    # No traffic but to the live server: no background services, no proxy, and no name but
    # 127.0.0.1 resolves.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,PasswordLeakDetection",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--password-store=basic",
]

ACME = "Acme renewal"
GLOBEX = "Globex expansion"
FLAKY = "Initech pilot"
PASSWORD = "password"


@pytest.fixture
def live_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """pytest-django's live server, on 127.0.0.1 and serving the admin's CSS and JavaScript.

    tests.settings leave out django.contrib.staticfiles, and pytest-django's own fixture is
    session-wide, started before any per-test setting could apply. This one serves the admin's
    static directory for this test only, so that the screenshots show the admin as people see it.
    """
    from pytest_django.live_server_helper import LiveServer

    static = {"STATIC_URL": "/static/", "STATIC_ROOT": str(ADMIN_STATIC)}
    if "django.contrib.staticfiles" in settings.INSTALLED_APPS:
        static = {"STATIC_URL": settings.STATIC_URL or "/static/"}
    with override_settings(**static):
        server = LiveServer("127.0.0.1")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    # The driver's path is given, so Selenium Manager is not consulted; offline in case it were.
    monkeypatch.setenv("SE_OFFLINE", "true")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_experimental_option(
        "prefs", {"credentials_enable_service": False, "profile.password_manager_enabled": False}
    )
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser: WebDriver) -> Any:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> Path:
        # The whole page, not just the window: grow the window to the page, then put it back.
        # The window's size includes what is not page, hence the difference between the two.
        height, chrome = browser.execute_script(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
        )
        browser.set_window_size(WIDTH, max(HEIGHT, min(int(height) + int(chrome), 5000)))
        path = SCREENSHOTS / f"{name}.png"
        assert browser.save_screenshot(str(path)), f"could not save {path}"
        browser.set_window_size(WIDTH, HEIGHT)
        return path

    return save


@pytest.fixture
def admin_user(admin_user: Any) -> Any:
    """The shared superuser, with a password to type into the login form."""
    admin_user.set_password(PASSWORD)
    admin_user.save()
    return admin_user


@pytest.fixture
def receiver_down() -> Iterator[Callable[[], None]]:
    """Until the test calls the function it gives, a receiver fails for the Initech opportunity, as
    a project's own code might (a bug, a database it writes to being down)."""
    with raising_receiver(
        opportunity_created, RuntimeError, "forecast service unavailable", remote_id="opp_initech"
    ) as fix:
        yield fix


def post_webhook(
    base_url: str, payload: Any, key: str, owner_id: str = "tenant_1"
) -> tuple[int, dict[str, Any]]:
    """POST an event as Morph does: JSON, the secret in the URL, Morph's headers."""
    secret = settings.MORPH_WEBHOOKS["SECRETS"][0]
    request = urllib.request.Request(
        f"{base_url}/webhooks/morph/?{urlencode({'token': secret})}",
        data=json.dumps(payload).encode(),
        headers={**morph_headers(key, owner_id=owner_id), "Content-Type": "application/json"},
        method="POST",
    )
    # No proxy, whatever the environment says: the live server is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=WAIT) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def rows(browser: WebDriver) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")


def row_with(browser: WebDriver, text: str) -> WebElement:
    [row] = [row for row in rows(browser) if text in row.text]
    return row


def assert_fits(browser: WebDriver) -> None:
    """Nothing scrolls sideways: neither the page nor the list's own scrolling box."""
    page, results = browser.execute_script(
        "const results = document.querySelector('#changelist .results');"
        "return [document.documentElement.scrollWidth,"
        " results ? results.scrollWidth - results.clientWidth : 0]"
    )
    assert page <= WIDTH
    assert results <= 0, f"the list is {results}px wider than its box"


def test_admin_end_to_end(live_server, admin_user, browser, screenshot, receiver_down):
    wait = WebDriverWait(browser, WAIT)
    base = live_server.url

    # Log in through the form.
    browser.get(f"{base}{reverse('admin:login')}?next={reverse('admin:index')}")
    browser.find_element(By.ID, "id_username").send_keys(admin_user.username)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait.until(EC.presence_of_element_located((By.ID, "user-tools")))
    assert "Site administration" in browser.title
    assert browser.find_element(By.CSS_SELECTOR, "#content-main").is_displayed()
    screenshot("01-logged-in")

    # Morph calls: two opportunities in different stages, one invalid event, and one whose
    # receiver fails.
    acme = opportunity_event("created", "opp_acme")
    globex = opportunity_event(
        "created",
        "opp_globex",
        fields={
            "name": GLOBEX,
            "amount": 48000,
            "currency": "usd",
            "stage": reference("crmStage", "stage_won"),
            "pipeline": reference("crmPipeline", "pipeline_sales"),
        },
    )
    invalid = opportunity_event("created", "opp_invalid", fields={"name": "Broken", "amount": "lots"})
    flaky = opportunity_event(
        "created",
        "opp_initech",
        fields={"name": FLAKY, "amount": 9900.5, "currency": "EUR", "stage": "stage_qualified"},
    )
    # The pipeline's stages and the deal owner first, as a sync sends them: the admin names them.
    for model, remote_id, fields in [
        ("crmPipeline", "pipeline_sales", {"name": "Sales"}),
        ("crmStage", "stage_qualified", {"name": "Qualified", "type": "OPEN", "pipeline": "pipeline_sales"}),
        ("crmStage", "stage_won", {"name": "Closed won", "type": "won", "pipeline": "pipeline_sales"}),
        ("genericUser", "user_42", {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}),
        ("crmPipeline", "pipeline_old", {"name": "Old pipeline"}),
    ]:
        event = resource_event(model, "created", remote_id, fields=fields)
        assert post_webhook(base, event, f"browser-{remote_id}") == (200, {"status": "processed"})
    # ...and one that the CRM has deleted since.
    gone = resource_event("crmPipeline", "deleted", "pipeline_old", updated_at="2025-03-07T10:00:00Z")
    assert post_webhook(base, gone, "browser-pipeline-old-deleted") == (200, {"status": "processed"})
    assert post_webhook(base, acme, "browser-acme") == (200, {"status": "processed"})
    assert post_webhook(base, globex, "browser-globex") == (200, {"status": "processed"})
    status, answer = post_webhook(base, invalid, "browser-invalid")
    assert (status, answer["error"], list(answer["fields"])) == (400, "invalid_event", ["data.fields.amount"])
    status, answer = post_webhook(base, flaky, "browser-initech")
    assert (status, answer["error"]) == (500, "processing_failed")

    # The opportunities arrived.
    browser.find_element(By.LINK_TEXT, "Opportunities").click()
    wait.until(EC.presence_of_element_located((By.LINK_TEXT, ACME)))
    assert sorted(row.find_element(By.CSS_SELECTOR, "th a").text for row in rows(browser)) == [ACME, GLOBEX]
    globex_row = row_with(browser, GLOBEX).text
    assert "48,000.00 USD" in globex_row
    # Names, not ids: the stage with its type, the pipeline, the owner.
    assert "Closed won (won)" in globex_row and "Sales" in globex_row
    assert "Ada Lovelace" in row_with(browser, ACME).text
    assert "stage_won" not in globex_row
    assert_fits(browser)
    screenshot("02-opportunities")

    # One opportunity in full.
    row_with(browser, GLOBEX).find_element(By.CSS_SELECTOR, "th a").click()
    stage = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-stage_linked .readonly")))
    assert stage.text == "Closed won (won)"
    assert (
        browser.find_element(By.CSS_SELECTOR, ".field-amount_with_currency .readonly").text == "48,000.00 USD"
    )
    assert_fits(browser)
    screenshot("02b-opportunity")
    browser.back()
    wait.until(EC.presence_of_element_located((By.LINK_TEXT, ACME)))

    # Filter by stage.
    filters = browser.find_element(By.ID, "changelist-filter")
    filters.find_element(By.LINK_TEXT, "Closed won (won)").click()
    wait.until(EC.url_contains("stage_id=stage_won"))
    wait.until(lambda driver: len(rows(driver)) == 1)
    assert [row.find_element(By.CSS_SELECTOR, "th a").text for row in rows(browser)] == [GLOBEX]
    assert_fits(browser)
    screenshot("03-filtered-by-stage")

    # A related model's list: the stages, their pipeline by name.
    browser.get(f"{base}{reverse('admin:morph_webhooks_stage_changelist')}")
    wait.until(lambda driver: len(rows(driver)) == 2)
    assert "Sales" in row_with(browser, "Closed won").text
    assert_fits(browser)
    screenshot("03b-stages")

    # A deleted row is marked so, not with a green check.
    browser.get(f"{base}{reverse('admin:morph_webhooks_pipeline_changelist')}")
    wait.until(lambda driver: len(rows(driver)) == 2)
    assert "Deleted" in row_with(browser, "Old pipeline").text
    assert "Deleted" not in row_with(browser, "Sales").text
    assert not browser.find_elements(By.CSS_SELECTOR, '#result_list img[alt="True"]')
    assert_fits(browser)
    screenshot("03c-pipelines")

    # The request log: every request, with its outcome.
    browser.get(f"{base}{reverse('admin:morph_webhooks_webhookdelivery_changelist')}")
    wait.until(lambda driver: len(rows(driver)) == 10)
    assert "Rejected (400)" in row_with(browser, "browser-invalid").text
    assert "Failed (500)" in row_with(browser, "browser-initech").text
    # The rejected delivery still names its event and Morph id.
    assert "crmOpportunity::created" in row_with(browser, "browser-invalid").text
    assert "opp_invalid" in row_with(browser, "browser-invalid").text
    assert_fits(browser)
    screenshot("04-deliveries")

    # One request in full, its body pretty-printed.
    row_with(browser, "browser-globex").find_element(By.CSS_SELECTOR, "th a").click()
    body = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-body_json pre")))
    assert f'"name": "{GLOBEX}"' in body.text
    assert '\n  "event": "crmOpportunity::created"' in body.text
    # The row it changed, one click away.
    resource = browser.find_element(By.CSS_SELECTOR, ".field-resource .readonly a")
    assert resource.text == f"{GLOBEX} (opportunity)"
    assert_fits(browser)
    screenshot("05-delivery-body")

    # The failing receiver is fixed; reprocess the failed delivery from the list.
    receiver_down()
    browser.back()
    wait.until(lambda driver: len(rows(driver)) == 10)
    row_with(browser, "browser-initech").find_element(By.NAME, "_selected_action").click()
    Select(browser.find_element(By.NAME, "action")).select_by_visible_text("Reprocess selected deliveries")
    browser.find_element(By.CSS_SELECTOR, "#changelist-form button[name=index]").click()
    message = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert message.text == "Reprocessed 1 delivery: 1 processed."
    assert "Processed (200)" in row_with(browser, "browser-initech").text
    assert Opportunity.objects.filter(name=FLAKY).exists()
    assert WebhookDelivery.objects.get(idempotency_key="browser-initech").attempts == 2
    screenshot("06-reprocessed")

    # A tenant that has gone quiet for three days, to be flagged as the health check would.
    Connection.objects.create(connector_id="pipedrive", owner_id="tenant_9")
    quiet = WebhookDeliveryFactory(connector_id="pipedrive", owner_id="tenant_9")
    WebhookDelivery.objects.filter(pk=quiet.pk).update(received_at=timezone.now() - timedelta(days=3))

    # The overview, linked from the request log.
    # By its address: the admin's CSS writes the object tools' labels in capitals.
    overview = reverse("admin:morph_webhooks_webhookdelivery_overview")
    browser.find_element(By.CSS_SELECTOR, f'.object-tools a[href="{overview}"]').click()
    caption = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#deliveries-per-hour caption")))
    assert caption.get_attribute("textContent") == "10 deliveries in the last 24 hours"  # shown in capitals
    totals = {
        cell.get_attribute("data-outcome"): int(cell.text)
        for cell in browser.find_elements(By.CSS_SELECTOR, "#deliveries-per-hour tfoot td[data-outcome]")
    }
    assert {outcome: count for outcome, count in totals.items() if count} == {
        "processed": 9,
        "rejected": 1,
        "total": 10,
    }
    failures = browser.find_element(By.CSS_SELECTOR, "#recent-failures tbody").text
    assert "Rejected (400)" in failures
    assert "browser-invalid" in failures
    # The hours without deliveries are one row.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#deliveries-per-hour tbody tr")) <= 3
    # Each connection: the quiet one first, flagged; the one Morph calls, receiving.
    connections = browser.find_elements(By.CSS_SELECTOR, "#connections tbody tr")
    assert [row.get_attribute("data-connection") for row in connections] == [
        "pipedrive/tenant_9",
        "hubspot/tenant_1",
    ]
    assert "Silent: no event for longer than its threshold" in connections[0].text
    assert "Receiving" in connections[1].text and "1 day" in connections[1].text
    # Two connections: the opportunities are one's, chosen here, never added up.
    chooser = browser.find_element(By.ID, "opportunities-connections")
    assert not browser.find_elements(By.ID, "opportunities-open")
    assert_fits(browser)
    screenshot("07-overview")
    chooser.find_element(By.LINK_TEXT, "hubspot / tenant_1").click()
    open_deals = wait.until(EC.visibility_of_element_located((By.ID, "opportunities-open"))).text
    assert "Qualified EUR 2 22,400.50 EUR" in open_deals
    # A won deal is not open.
    assert "Closed won" not in open_deals
    assert (
        "Closed won USD 1 48,000.00 USD" in browser.find_element(By.CSS_SELECTOR, "#opportunities-won").text
    )
    assert_fits(browser)
    screenshot("07b-overview-of-a-connection")

    # The connections the events registered, with their last event, ready to sync; one is
    # syncing now.
    syncing = Connection.objects.order_by("pk").first()
    assert syncing is not None and syncing.claim_sync()
    browser.get(f"{live_server.url}/admin/morph_webhooks/connection/")
    listing = browser.find_element(By.ID, "result_list").text
    assert "hubspot" in listing and "running since" in listing
    screenshot("08-connections")
    assert_fits(browser)
    browser.get(f"{live_server.url}/admin/morph_webhooks/connection/{syncing.pk}/change/")
    assert "another sync can start after" in browser.find_element(By.ID, "content").text
    screenshot("08b-connection")
    assert_fits(browser)


# Two tenants of one connector whose CRMs use the same ids and names, with names as long as real
# ones get.
TENANTS = ["acme-industries-emea-production", "globex-corporation-north-america"]
LONG_DEALS = [
    "Acme Industries – Enterprise platform renewal 2027 (EMEA, 3-year)",
    "Globex Corporation – Data warehouse expansion, phase II (North America)",
]


def log_in(browser: WebDriver, base: str, user: Any) -> None:
    browser.get(f"{base}{reverse('admin:login')}?next={reverse('admin:index')}")
    browser.find_element(By.ID, "id_username").send_keys(user.username)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(browser, WAIT).until(EC.presence_of_element_located((By.ID, "user-tools")))


def assert_shown(browser: WebDriver, header: str) -> None:
    """The list's column ``header`` is within the window, not cut off at its right edge."""
    [cell] = [
        cell
        for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list thead th")
        if cell.get_attribute("textContent").strip().casefold() == header.casefold()
    ]
    right = browser.execute_script("return arguments[0].getBoundingClientRect().right", cell)
    assert right <= browser.execute_script("return document.documentElement.clientWidth"), header


def test_lists_fit_with_the_sidebar_open(live_server, admin_user, browser, screenshot):
    base = live_server.url
    for tenant, deal in zip(TENANTS, LONG_DEALS, strict=True):
        events = [
            resource_event(
                "crmPipeline", "created", "pipeline_sales", fields={"name": "Sales pipeline – Enterprise"}
            ),
            resource_event(
                "crmStage",
                "created",
                "stage_appointment",
                fields={"name": "Appointment scheduled", "type": "OPEN", "pipeline": "pipeline_sales"},
            ),
            resource_event(
                "crmStage",
                "created",
                "stage_won",
                fields={"name": "Closed won", "type": "WON", "pipeline": "pipeline_sales"},
            ),
            resource_event(
                "genericUser",
                "created",
                "user_42",
                fields={
                    "firstName": "Maximilian",
                    "lastName": "Oppenheimer-Castellanos",
                    "email": "m@example.com",
                },
            ),
            opportunity_event(
                "created",
                "opp_1",
                fields={
                    "name": deal,
                    "amount": 1250000.75,
                    "currency": "EUR",
                    "stage": "stage_appointment",
                    "pipeline": "pipeline_sales",
                    "owner": "user_42",
                },
            ),
            opportunity_event("created", "opp_2", fields={"name": f"{deal} – lost to a competitor"}),
            opportunity_event("deleted", "opp_2", updated_at="2025-03-07T10:00:00Z"),
            engagement_event(
                "created",
                "call_1",
                fields={
                    "type": "call",
                    "direction": "outbound",
                    "status": "completed",
                    "title": f"Renewal call: {deal}",
                    "startedAt": "2025-03-06T09:00:00.000Z",
                    "duration": 1800,
                    "owner": reference("genericUser", "user_42"),
                    "opportunities": [reference("crmOpportunity", "opp_1")],
                },
            ),
        ]
        for event in events:
            # Morph's keys are long: the list shows their start.
            key = f"evt_{tenant}_{event['data']['id']}_{event['event']}_0123456789abcdef"
            status, _ = post_webhook(base, event, key, owner_id=tenant)
            assert status == 200
    log_in(browser, base, admin_user)

    for name, url, columns in [
        ("10-opportunities-two-tenants", "opportunity", ["deleted", "updated", "connection"]),
        ("11-deliveries-two-tenants", "webhookdelivery", ["idempotency key", "connection"]),
        ("12-keys-two-tenants", "idempotencykey", ["key", "first seen"]),
        ("13-stages-two-tenants", "stage", ["deleted"]),
        ("14-connections-two-tenants", "connection", ["error"]),
        ("14b-engagements-two-tenants", "engagement", ["type", "started", "deleted"]),
    ]:
        browser.get(f"{base}{reverse(f'admin:morph_webhooks_{url}_changelist')}")
        WebDriverWait(browser, WAIT).until(lambda driver: rows(driver))
        # Django's default: the navigation sidebar open beside the list.
        assert browser.find_element(By.ID, "nav-sidebar").is_displayed()
        screenshot(name)
        assert_fits(browser)
        for column in columns:
            assert_shown(browser, column)

    # The filters say whose each stage is.
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_changelist')}")
    filters = browser.find_element(By.ID, "changelist-filter")
    filters.find_element(
        By.PARTIAL_LINK_TEXT, f"Appointment scheduled (open) · hubspot / {TENANTS[1]}"
    ).click()
    WebDriverWait(browser, WAIT).until(EC.url_contains("stage_id=stage_appointment"))
    assert [row.find_element(By.CSS_SELECTOR, "th a").text for row in rows(browser)] == [LONG_DEALS[1]]
    assert_fits(browser)
    screenshot("15-opportunities-of-one-tenant")

    browser.get(f"{base}{reverse('admin:morph_webhooks_webhookdelivery_overview')}")
    chooser = browser.find_element(By.ID, "opportunities-connections")
    screenshot("16-overview-two-tenants")
    chooser.find_element(By.LINK_TEXT, f"hubspot / {TENANTS[0]}").click()
    won = WebDriverWait(browser, WAIT).until(EC.visibility_of_element_located((By.ID, "opportunities-open")))
    assert "Appointment scheduled EUR 1 1,250,000.75 EUR" in won.text
    assert_fits(browser)
    screenshot("17-overview-of-one-tenant")

    # A deleted deal's page says so first.
    gone = Opportunity.objects.get(owner_id=TENANTS[0], remote_id="opp_2")
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_change', args=[gone.pk])}")
    note = browser.find_element(By.CSS_SELECTOR, "#content-main .morph-deleted-note")
    assert note.text.startswith("Deleted: Morph reported it deleted in the CRM on ")
    assert note.location["y"] < browser.find_element(By.CSS_SELECTOR, ".field-name").location["y"]
    assert_fits(browser)
    screenshot("18-deleted-opportunity")

    # With more connections than a sidebar should list, a form takes the connector and owner.
    Connection.objects.bulk_create(
        Connection(connector_id="pipedrive", owner_id=f"tenant_{i:04}") for i in range(CONNECTION_CHOICES)
    )
    browser.get(f"{base}{reverse('admin:morph_webhooks_webhookdelivery_changelist')}?status=processed")
    form = browser.find_element(By.CSS_SELECTOR, "#changelist-filter .morph-connection-filter")
    form.find_element(By.NAME, "connector_id").send_keys("hubspot")
    form.find_element(By.NAME, "owner_id").send_keys(TENANTS[1])
    form.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    WebDriverWait(browser, WAIT).until(EC.url_contains("owner_id="))
    # The other filters are kept.
    assert "status=processed" in browser.current_url
    assert {row.find_element(By.CSS_SELECTOR, ".field-connection").text for row in rows(browser)} == {
        f"hubspot / {TENANTS[1]}"
    }
    assert_fits(browser)
    screenshot("19-deliveries-filtered-by-a-typed-connection")


# A deal as sales operations follow it: its buying committee, the companies involved, and the
# calls, meetings and emails that moved it, by two sales reps.
PEOPLE = {
    "contact_cfo": ("Margaret", "Hamilton-Whitfield", "m.hamilton@acme.example"),
    "contact_it": ("Grace", "Hopper", "grace.hopper@acme.example"),
    "contact_buyer": ("Alan", "Turing", "procurement@acme.example"),
}
REPS = {"user_ada": ("Ada", "Lovelace"), "user_linus": ("Linus", "Pauling")}
BIG_DEAL = "Acme Industries – Enterprise platform renewal 2027 (EMEA, 3-year)"
TIMELINE = [
    # (id, type, direction, status, title, started, owner, contacts)
    (
        "call_1",
        "call",
        "outbound",
        "completed",
        "Discovery call with the CFO",
        "2025-02-03T09:00:00Z",
        "user_ada",
        ["contact_cfo"],
    ),
    (
        "meeting_1",
        "meeting",
        None,
        "completed",
        "Platform demo for IT and procurement",
        "2025-02-10T14:00:00Z",
        "user_ada",
        ["contact_it", "contact_buyer"],
    ),
    (
        "email_1",
        "email",
        "outbound",
        "completed",
        "Proposal and pricing for the 3-year renewal",
        "2025-02-12T08:30:00Z",
        "user_linus",
        ["contact_cfo", "contact_buyer"],
    ),
    (
        "call_2",
        "call",
        "inbound",
        "completed",
        "Procurement questions on the master agreement",
        "2025-02-20T11:15:00Z",
        "user_linus",
        ["contact_buyer"],
    ),
    (
        "meeting_2",
        "meeting",
        None,
        "planned",
        "Contract review with legal",
        "2025-03-12T15:00:00Z",
        "user_ada",
        ["contact_cfo", "contact_it", "contact_buyer"],
    ),
]


def relations_events() -> list[dict[str, Any]]:
    events = [
        resource_event(
            "crmPipeline",
            "created",
            "pipeline_sales",
            fields={
                "name": "Enterprise sales",
                "stages": [
                    reference("crmStage", stage) for stage in ("stage_negotiation", "stage_won", "stage_lost")
                ],
            },
        ),
        *(
            resource_event(
                "crmStage",
                "created",
                remote_id,
                fields={"name": name, "type": kind, "pipeline": "pipeline_sales"},
            )
            for remote_id, name, kind in [
                ("stage_negotiation", "Negotiation", "OPEN"),
                ("stage_won", "Closed won", "WON"),
                ("stage_lost", "Closed lost", "LOST"),
            ]
        ),
        *(
            resource_event(
                "genericUser",
                "created",
                remote_id,
                fields={"firstName": first, "lastName": last, "email": f"{first.lower()}@example.com"},
            )
            for remote_id, (first, last) in REPS.items()
        ),
        *(
            resource_event(
                "genericContact",
                "created",
                remote_id,
                fields={"firstName": first, "lastName": last, "email": email},
            )
            for remote_id, (first, last, email) in PEOPLE.items()
        ),
        resource_event("genericCompany", "created", "company_acme", fields={"name": "Acme Industries GmbH"}),
        resource_event(
            "genericCompany", "created", "company_partner", fields={"name": "Initrode Consulting"}
        ),
        resource_event("genericCompany", "created", "company_quiet", fields={"name": "Quiet Ltd"}),
        opportunity_event(
            "created",
            "opp_big",
            fields={
                "name": BIG_DEAL,
                "amount": 1250000.75,
                "currency": "EUR",
                "stage": "stage_negotiation",
                "pipeline": "pipeline_sales",
                "owner": "user_ada",
                "contacts": [reference("genericContact", c) for c in [*PEOPLE, "contact_not_synced"]],
                "companies": [reference("genericCompany", "company_acme"), "company_partner"],
            },
        ),
        opportunity_event(
            "created",
            "opp_won",
            fields={
                "name": "Acme Industries – Analytics add-on",
                "amount": 84000,
                "currency": "EUR",
                "stage": "stage_won",
                "pipeline": "pipeline_sales",
                "owner": "user_linus",
                "contacts": ["contact_cfo"],
                "companies": ["company_acme"],
            },
        ),
        opportunity_event(
            "created",
            "opp_lost",
            fields={
                "name": "Acme Industries – Support upgrade",
                "amount": 12000,
                "currency": "EUR",
                "stage": "stage_lost",
                "pipeline": "pipeline_sales",
                "owner": "user_linus",
                "companies": ["company_acme"],
            },
        ),
    ]
    for remote_id, kind, direction, status, title, started, owner, contacts in TIMELINE:
        fields: dict[str, Any] = {
            "type": kind,
            "status": status,
            "title": title,
            "startedAt": started,
            "owner": reference("genericUser", owner),
            "contacts": [reference("genericContact", c) for c in contacts],
            "companies": [reference("genericCompany", "company_acme")],
            "opportunities": [reference("crmOpportunity", "opp_big")],
            "users": [reference("genericUser", owner)],
        }
        if direction:
            fields["direction"] = direction
        events.append(engagement_event("created", remote_id, fields=fields))
    return events


def test_a_deals_relations(live_server, admin_user, browser, screenshot):
    """A deal's page, the pages of what it relates to, and the deals filtered by stage type."""
    base = live_server.url
    for number, event in enumerate(relations_events()):
        assert post_webhook(base, event, f"relations-{number}") == (200, {"status": "processed"})
    log_in(browser, base, admin_user)
    wait = WebDriverWait(browser, WAIT)

    def page(name: str) -> str:
        # The window at a laptop's width with the navigation sidebar open, as Django opens it.
        assert browser.find_element(By.ID, "nav-sidebar").is_displayed()
        assert_fits(browser)
        screenshot(name)
        return str(browser.find_element(By.ID, "content").text)

    def text_of(field: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, f".field-{field} .readonly").text)

    # The deal: its stage with its type, pipeline, owner, people and companies, then its timeline.
    deal = Opportunity.objects.get(remote_id="opp_big")
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_change', args=[deal.pk])}")
    assert text_of("stage_linked") == "Negotiation (open)"
    assert text_of("pipeline_linked") == "Enterprise sales"
    assert text_of("crm_owner_linked") == "Ada Lovelace"
    assert text_of("listed_contacts") == (
        "Margaret Hamilton-Whitfield, Grace Hopper, Alan Turing, contact_not_synced (not received yet)"
    )
    assert text_of("listed_companies") == "Acme Industries GmbH, Initrode Consulting"
    timeline = browser.find_elements(By.CSS_SELECTOR, ".field-timeline tbody tr")
    # Newest first.
    assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in timeline] == [
        entry[4] for entry in reversed(TIMELINE)
    ]
    assert "Linus Pauling" in timeline[1].text and "Hopper" not in timeline[1].text
    page("20-opportunity-with-timeline")

    # From the deal to its stage: the deals in that stage.
    browser.find_element(By.CSS_SELECTOR, ".field-stage_linked a").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-deals")))
    assert BIG_DEAL in text_of("deals")
    page("21-stage")

    # A contact: their deals and the engagements they took part in.
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_change', args=[deal.pk])}")
    browser.find_element(By.LINK_TEXT, "Margaret Hamilton-Whitfield").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-timeline")))
    deals = text_of("deals")
    assert BIG_DEAL in deals and "Analytics add-on" in deals and "Closed won (won)" in deals
    timeline_text = text_of("timeline")
    assert "Discovery call with the CFO" in timeline_text and "Platform demo" not in timeline_text
    page("22-contact")

    # A company: every deal and engagement it is part of; one without says so.
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_change', args=[deal.pk])}")
    browser.find_element(By.LINK_TEXT, "Acme Industries GmbH").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-deals")))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".field-deals tbody tr")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, ".field-timeline tbody tr")) == len(TIMELINE)
    page("23-company")
    quiet = reverse(
        "admin:morph_webhooks_company_change", args=[Company.objects.get(remote_id="company_quiet").pk]
    )
    browser.get(f"{base}{quiet}")
    assert text_of("deals") == "No opportunities."
    assert text_of("timeline") == "No engagements."
    page("23b-company-without-deals")

    # An engagement: what it was, and whom and what it involved.
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_change', args=[deal.pk])}")
    browser.find_element(By.LINK_TEXT, "Platform demo for IT and procurement").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-listed_opportunities")))
    assert text_of("listed_opportunities") == BIG_DEAL
    assert text_of("listed_contacts") == "Grace Hopper, Alan Turing"
    assert text_of("crm_owner_linked") == "Ada Lovelace"
    page("24-engagement")

    # A sales rep: the deals and engagements they own.
    browser.find_element(By.CSS_SELECTOR, ".field-crm_owner_linked a").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-owned_timeline")))
    assert BIG_DEAL in text_of("deals")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".field-owned_timeline tbody tr")) == 3
    page("25-crm-user")

    # The pipeline: its stages in order, and its deals.
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_change', args=[deal.pk])}")
    browser.find_element(By.CSS_SELECTOR, ".field-pipeline_linked a").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".field-deals")))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".field-deals tbody tr")) == 3
    # Its stages in the pipeline's order, each with its number of deals.
    stages = browser.find_elements(By.CSS_SELECTOR, ".field-stages_in_order tbody tr")
    assert [row.text for row in stages] == ["Negotiation open 1", "Closed won won 1", "Closed lost lost 1"]
    page("26-pipeline")

    # The deals won, by their stage's type.
    browser.get(f"{base}{reverse('admin:morph_webhooks_opportunity_changelist')}")
    browser.find_element(By.ID, "changelist-filter").find_element(By.LINK_TEXT, "won").click()
    wait.until(EC.url_contains("stage__type=WON"))
    assert [row.find_element(By.CSS_SELECTOR, "th a").text for row in rows(browser)] == [
        "Acme Industries – Analytics add-on"
    ]
    page("27-opportunities-won")

    # All the engagements of the deal, as its page links to them past the newest 50: the filter
    # names the deal.
    engagements = reverse("admin:morph_webhooks_engagement_changelist")
    browser.get(f"{base}{engagements}?opportunities={deal.pk}&o=-2")
    wait.until(lambda driver: len(rows(driver)) == len(TIMELINE))
    chosen = browser.find_element(
        By.CSS_SELECTOR, "#changelist-filter details[data-filter-title='opportunities'] li.selected a"
    )
    assert chosen.text == BIG_DEAL
    page("28-engagements-of-a-deal")
