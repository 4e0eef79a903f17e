"""The budget admin in a real browser (Debian's headless Chromium through Playwright), over a live server.

A finance user edits a cap and sees the change in the history; a staff user outside finance gets a
read-only page. The screenshot of the edited budget goes to docs/img/budget-admin.png under `make screenshots`.
"""

from __future__ import annotations

import contextlib
import os
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from apps.budgets.models import Budget, BudgetChange, BudgetCounter
from apps.budgets.selectors import period_start
from apps.budgets.services import finance_group_ensure

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("FINOPS_CHROMIUM", "/usr/bin/chromium")


@contextlib.contextmanager
def chromium():
    """Playwright's sync API runs an event loop in this thread while open: no ORM calls inside the block."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (or set FINOPS_CHROMIUM) to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
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


def test_finance_edits_a_cap_and_others_cannot(live_server, make_tenant, make_budget, django_user_model, screenshots):
    tenant = make_tenant(org="Acme", team="Search", user="alice")
    make_budget(scope="org", tenant=tenant, cap="500.00")
    budget = make_budget(scope="team", tenant=tenant, cap="100.00")
    now = timezone.now()
    BudgetCounter.objects.create(
        budget=budget,
        period_start=period_start("monthly", now),
        spent_usd=Decimal("85.40"),
        reserved_usd=Decimal("1.25"),
        updated_at=now,
    )
    finance = django_user_model.objects.create_user("fiona", password="pw-fiona-123", is_staff=True)
    finance.groups.add(finance_group_ensure())
    sam = django_user_model.objects.create_user("sam", password="pw-sam-123", is_staff=True)
    tenant.member.user = sam  # staff see their own org's budgets (apps.tenancy.access)
    tenant.member.save(update_fields=["user"])
    change_url = f"{live_server.url}/admin/budgets/budget/{budget.id}/change/"

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        log_in(page, live_server.url, "fiona", "pw-fiona-123")
        page.goto(change_url)
        page.fill("#id_cap_usd", "150.00")
        page.click("input[name=_continue]")
        page.wait_for_selector(".messagelist")
        history = page.inner_text("#changes-group")
        assert "100.00" in history and "150.00" in history and "fiona" in history
        page.screenshot(path=str(screenshots / "budget-admin.png"), full_page=True)
        context.close()

        context = browser.new_context()
        page = context.new_page()
        log_in(page, live_server.url, "sam", "pw-sam-123")
        page.goto(change_url)
        assert page.locator("#id_cap_usd").count() == 0  # read-only page: no input to edit
        assert page.locator("input[name=_save]").count() == 0
        assert "150.00" in page.content()
        page.goto(f"{live_server.url}/admin/budgets/budget/add/")
        assert "403" in page.title() or page.locator("#id_cap_usd").count() == 0
        context.close()

    budget = Budget.objects.get(pk=budget.pk)
    assert budget.cap_usd == Decimal("150.00")
    assert (
        BudgetChange.objects.filter(
            budget=budget, field="cap_usd", old_value="100.00", new_value="150.00", changed_by=finance
        ).count()
        == 1
    )
