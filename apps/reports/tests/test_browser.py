"""Finance's day in a real browser: Debian's headless Chromium through Playwright, against a live server.

A finance user logs in, reads the cost dashboard, edits a budget cap and finds it in the history,
acknowledges an anomaly; a staff member outside finance can look but not edit. Screenshots (dashboard.png,
org-dashboard.png, budget-history.png, anomalies.png, ledger.png) go to docs/img/ under `make screenshots`.
"""

from __future__ import annotations

import contextlib
import os
from decimal import Decimal
from pathlib import Path

import pytest

from apps.reports.periods import current_month
from apps.reports.tests.conftest import at, make_anomaly, make_budget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("FINOPS_CHROMIUM", "/usr/bin/chromium")


@contextlib.contextmanager
def chromium():
    """Playwright's sync API runs an event loop in this thread while open: no ORM calls inside the block."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (or set FINOPS_CHROMIUM) to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


@pytest.fixture
def finance_world(ledger, make_tenant, finance_user, django_user_model, today):
    acme = make_tenant(org="Acme Retail", team="Search", user="alice")
    catalog = make_tenant(org="Acme Retail", team="Catalog", user="carol")
    globex = make_tenant(org="Globex Bank", team="Risk", user="gina")
    month = current_month()
    days = sorted({month.start, *(d for d in month.days_until(today) if d.day % 3 == 0), today})
    for n, day in enumerate(days):
        ledger.add(
            acme, model="gpt-4o-mini", at=at(day, 0), prompt=40_000 + 3_000 * n, completion=9_000, route_strategy="complexity"
        )
        ledger.add(
            acme,
            model="gpt-4o",
            at=at(day, 0),
            prompt=20_000,
            completion=4_000 + 500 * n,
            tier="premium",
            route_strategy="keyword",
        )
        ledger.add(acme, model="gpt-4o", at=at(day, 0), prompt=20_000, completion=4_000, status="cached")
        ledger.add(catalog, model="claude-3-5-haiku-20241022", at=at(day, 0), prompt=30_000, completion=6_000, tier="mid")
        ledger.add(
            globex, model="claude-sonnet-4-20250514", at=at(day, 0), prompt=25_000 + 2_000 * n, completion=5_000, tier="premium"
        )
    for day in month.previous.days()[::2]:
        ledger.add(acme, model="gpt-4o-mini", at=at(day, 9), prompt=60_000, completion=9_000)
        ledger.add(globex, model="claude-sonnet-4-20250514", at=at(day, 9), prompt=30_000, completion=5_000)
    ledger.rollup(since=month.previous.start, until=today)
    make_budget(tenant=acme, scope="org", cap="20.00", spent="6.50")
    budget = make_budget(tenant=acme, scope="team", cap="10.00", spent="3.20")
    make_budget(tenant=globex, scope="org", cap="15.00", spent="9.90")
    anomaly = make_anomaly(
        org=acme.org, team=acme.team, severity="critical", impact="42.00", label="acme-retail/search spend spike"
    )
    make_anomaly(org=globex.org, severity="warning", impact="8.00", label="globex-bank premium share")
    django_user_model.objects.create_user("sam", password="pw-sam-123", is_staff=True)
    return {"budget": budget, "anomaly": anomaly, "acme": acme}


def test_finance_reviews_costs_edits_a_cap_and_triages_an_anomaly(live_server, finance_world, screenshots):
    from apps.anomalies.models import Anomaly
    from apps.budgets.models import BudgetChange

    base = live_server.url
    budget, anomaly, acme = finance_world["budget"], finance_world["anomaly"], finance_world["acme"]
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        log_in(page, base, "fiona", "pw-fiona-123")

        # 1. The admin home is the cost dashboard, with the app list under it.
        assert page.locator("#cost-dashboard").is_visible()
        assert "All organizations" in page.inner_text("h2.fd-title")
        assert page.locator("#cost-dashboard svg.finops-chart").count() >= 4
        assert "Acme Retail" in page.inner_text("#table-1") and "Globex Bank" in page.inner_text("#table-1")
        assert "acme-retail/search spend spike" in page.inner_text("#anomalies")
        assert page.locator("#app-list, .app-ledger").count() >= 1
        page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

        # 2. The org page: the same view, scoped.
        page.click("#table-1 >> text=Acme Retail")
        page.wait_for_selector("#cost-dashboard")
        assert "Costs — Acme Retail" in page.inner_text("h2.fd-title")
        assert "Globex" not in page.inner_text("#cost-dashboard")
        page.screenshot(path=str(screenshots / "org-dashboard.png"), full_page=True)

        # 3. Edit a cap; the change shows in the history.
        page.goto(f"{base}/admin/budgets/budget/{budget.id}/change/")
        page.fill("#id_cap_usd", "12.50")
        page.click("input[name=_continue]")
        page.wait_for_selector(".messagelist")
        history = page.inner_text("#changes-group")
        assert "10.00" in history and "12.50" in history and "fiona" in history
        page.screenshot(path=str(screenshots / "budget-history.png"), full_page=True)

        # 4. Acknowledge the open anomaly from the triage list.
        page.goto(f"{base}/admin/anomalies/anomaly/?status__exact=open")
        page.check(f"input.action-select[value='{anomaly.id}']")
        page.select_option("select[name=action]", "acknowledge")
        page.click("button[name=index]")
        page.wait_for_selector(".messagelist")
        assert "1 anomaly acknowledged" in page.inner_text(".messagelist")
        page.goto(f"{base}/admin/anomalies/anomaly/")
        page.screenshot(path=str(screenshots / "anomalies.png"), full_page=True)

        # 5. The ledger list, bounded to the last day by default.
        page.goto(f"{base}/admin/ledger/llmrequest/?received=month")
        assert page.locator("#result_list tbody tr").count() > 0
        page.screenshot(path=str(screenshots / "ledger.png"), full_page=False)
        context.close()

        # 6. A staff member outside finance and without an org sees no budget, and cannot triage.
        context = browser.new_context()
        page = context.new_page()
        log_in(page, base, "sam", "pw-sam-123")
        assert "not linked to a finops member" in page.inner_text("#cost-dashboard")
        page.goto(f"{base}/admin/budgets/budget/{budget.id}/change/")
        assert page.locator("#id_cap_usd").count() == 0 and page.locator("input[name=_save]").count() == 0
        assert "12.50" not in page.content()  # no member, so no org: not even read-only (apps.tenancy.access)
        response = page.goto(f"{base}/admin/anomalies/anomaly/")
        assert response.status == 403
        response = page.goto(f"{base}/admin/reports/org/{acme.org.id}/")
        assert response.status == 403
        context.close()

    budget.refresh_from_db()
    assert budget.cap_usd == Decimal("12.50")
    assert BudgetChange.objects.filter(budget=budget, field="cap_usd", new_value="12.50", changed_by_label="fiona").exists()
    assert Anomaly.objects.get(pk=anomaly.pk).status == Anomaly.Status.ACKNOWLEDGED
