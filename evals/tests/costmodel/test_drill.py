"""The drill on a seeded ledger: it catches its own incident, walks the queries, and leaves nothing (or one copy) behind."""

from io import StringIO

import pytest
from django.core.management import call_command

from apps.anomalies.models import Anomaly
from apps.ledger.models import LLMRequest
from demo import seed
from evals.costmodel.drill import MARKER

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(prices, pinned_now):
    seed.seed_demo(per_day=400, days=30, seed=42)
    return LLMRequest.objects.count()


def drill(**options) -> str:
    out = StringIO()
    # Never the Alertmanager of a `make run` that may be up in this checkout (.finops/monitoring.env).
    call_command("drill", stdout=out, **{"no_page": True, **options})
    return out.getvalue()


def test_the_drill_pages_on_its_runaway_loop_and_rolls_back(seeded):
    text = drill()
    assert "critical  globex-bank " in text
    assert "Prometheus rules that fire: FinopsAnomalyCritical" in text
    for query in ("01_spend_by_org_last_hours.sql", "02_top_keys_last_hours.sql", "03_model_mix_last_hours.sql"):
        assert f"-- {query}" in text
    assert "Rolled back" in text
    assert LLMRequest.objects.count() == seeded
    assert not LLMRequest.objects.filter(prompt_hash=MARKER).exists()
    assert not Anomaly.objects.filter(details__drill=True).exists()


def test_a_kept_drill_is_replaced_not_doubled_by_the_next_one(seeded):
    drill(keep=True, per_hour=100, hours=2)
    assert LLMRequest.objects.filter(prompt_hash=MARKER).count() == 200
    marked = Anomaly.objects.filter(details__drill=True).count()
    assert marked >= 1
    text = drill(keep=True, per_hour=100, hours=2)
    assert "Removed a previous kept drill: 200 ledger rows" in text
    assert LLMRequest.objects.filter(prompt_hash=MARKER).count() == 200
    assert Anomaly.objects.filter(details__drill=True).count() == marked
    drill()  # a rolled-back drill still removes the kept one first
    assert not LLMRequest.objects.filter(prompt_hash=MARKER).exists()
    assert LLMRequest.objects.count() == seeded


def test_under_make_run_the_drill_pages_through_alertmanager_to_the_receiver(seeded, tmp_path):
    """Alertmanager on deploy/'s routes and the built-in receiver, as `make run` starts them: the drill's critical
    alerts are held by Alertmanager (routed to the pager and the finance channel) and page the on-call."""
    import subprocess
    import threading

    from evals.costmodel.drill import drill_run
    from finops import alert_receiver, monitoring
    from finops.processes import free_port, stop_process, wait_for_port

    binary = monitoring.binary_find(name="alertmanager")
    if binary is None:
        pytest.skip(monitoring.binary_hint(name="alertmanager"))
    receiver = alert_receiver.server(port=free_port())
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    receiver_url = f"http://127.0.0.1:{receiver.server_address[1]}"
    config = tmp_path / "alertmanager.yml"
    config.write_text(monitoring.alertmanager_config(receiver_url=receiver_url))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lines: list[str] = []
    try:
        wait_for_port(port, proc=proc)
        drill_run(write=lines.append, alertmanager_url=f"http://127.0.0.1:{port}", receiver_url=receiver_url)
        held = monitoring.alertmanager_alerts(url=f"http://127.0.0.1:{port}")
    finally:
        stop_process(proc)
        receiver.shutdown()
        receiver.server_close()
    text = "\n".join(lines)
    # The pager's route waits 10 s; finance-channel's (30 s) reaches the receiver after the drill has moved on.
    assert "PAGED: oncall-pager ← FinopsAnomalyCritical critical" in text, text[text.find("3b.") : text.find("== 4")]
    drill_alerts = [a for a in held if a["labels"].get("drill") == "true"]
    assert drill_alerts and {a["labels"]["severity"] for a in drill_alerts} == {"critical"}
    assert any(a["labels"].get("org") == "globex-bank" for a in drill_alerts)
    assert all({r["name"] for r in a["receivers"]} == {"oncall-pager", "finance-channel"} for a in drill_alerts)


def test_the_drill_needs_a_seeded_org(prices):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="make seed"):
        drill()
