"""The FOCUS export names the API each charge bought: ServiceName, ChargeDescription and x_Endpoint follow the endpoint."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from apps.ledger.models import LLMRequest
from apps.ledger.money import ZERO
from apps.reports.services import focus_export, month_ledger_total
from apps.reports.tests.conftest import at


def test_each_endpoint_is_its_own_service_and_the_export_still_adds_up(ledger, two_orgs, closed_month):
    acme, _ = two_orgs
    day = at(closed_month.start)
    ledger.add(acme, model="gpt-4o-mini", at=day, prompt=1000, completion=200)
    for endpoint in ("messages", "responses"):
        row = ledger.add(acme, model="gpt-4o-mini", at=day, prompt=500, completion=100)
        LLMRequest.objects.filter(pk=row.pk).update(endpoint=endpoint)
    embedding = ledger.add(acme, model="text-embedding-3-small", at=day, prompt=4000, completion=0)
    LLMRequest.objects.filter(pk=embedding.pk).update(endpoint="embeddings")

    out = io.StringIO()
    focus_export(month=closed_month, out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    services = {(r["x_Model"], r["x_Endpoint"]): r["ServiceName"] for r in rows}
    assert services == {
        ("gpt-4o-mini", "chat_completions"): "openai Chat Completions API",
        ("gpt-4o-mini", "messages"): "openai Messages API",
        ("gpt-4o-mini", "responses"): "openai Responses API",
        ("text-embedding-3-small", "embeddings"): "openai Embeddings API",
    }
    embedding_rows = [r for r in rows if r["x_Endpoint"] == "embeddings"]
    assert [(r["SkuMeter"], r["ConsumedQuantity"]) for r in embedding_rows] == [("Input Tokens", "4000")]
    assert embedding_rows[0]["ChargeDescription"] == "text-embedding-3-small input tokens (Embeddings API)"
    assert Decimal(embedding_rows[0]["BilledCost"]) == Decimal("0.00008")
    assert sum((Decimal(r["BilledCost"]) for r in rows), ZERO) == month_ledger_total(month=closed_month)
    assert sum(int(r["x_Requests"]) for r in rows) == 4


def test_the_dashboard_shows_spend_by_api(client, superuser, ledger, two_orgs, today):
    from apps.reports.periods import current_month

    acme, _ = two_orgs
    ledger.add(acme, model="gpt-4o-mini", at=at(today, 0), prompt=5000, completion=900)
    embedding = ledger.add(acme, model="text-embedding-3-small", at=at(today, 0), prompt=90000, completion=0)
    LLMRequest.objects.filter(pk=embedding.pk).update(endpoint="embeddings")
    ledger.rollup(since=current_month().start, until=today)
    client.force_login(superuser)
    html = client.get("/admin/").content.decode()
    assert "Spend by API (endpoint)" in html
    section = html[html.index("Spend by API (endpoint)") :]
    assert "chat_completions" in section[:3000] and "embeddings" in section[:3000]
