"""Every alert rule links to a runbook page that exists and has the five sections; the runbook's SQL runs."""

import re
from pathlib import Path

import pytest
import yaml
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook"
SECTIONS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Follow-up")


def alert_rules() -> list[dict]:
    return [
        rule
        for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_there_are_rules_to_check():
    assert len(alert_rules()) >= 18


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_the_rule_links_its_own_complete_runbook_page(rule):
    url = rule["annotations"]["runbook_url"]
    assert url == f"./docs/runbook/{rule['alert']}.md", url
    page = ROOT / url
    assert page.is_file(), url
    text = page.read_text()
    assert text.startswith(f"# {rule['alert']}\n")
    for section in SECTIONS:
        assert section in text, f"{page.name} lacks {section}"


def test_the_index_lists_every_alert_and_no_page_is_orphaned():
    index = (RUNBOOK / "README.md").read_text()
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts <= set(re.findall(r"\[(Finops\w+)\]\(Finops\w+\.md\)", index))
    pages = {p.stem for p in RUNBOOK.glob("Finops*.md")}
    assert pages == alerts


def test_every_file_the_pages_mention_exists():
    for page in RUNBOOK.glob("*.md"):
        text = page.read_text()
        for ref in re.findall(r"(?<![\w/])(sql/\d\d_\w+\.sql)", text):  # relative to docs/runbook/
            assert (RUNBOOK / ref).is_file(), f"{page.name}: {ref}"
        for ref in re.findall(r"(docs/(?:runbook/)?sql/\d\d_\w+\.sql)", text):
            assert (ROOT / ref).is_file(), f"{page.name}: {ref}"
        for ref in re.findall(r"`(docs/[\w./-]+\.(?:md|sql|yaml))`", page.read_text()):
            assert (ROOT / ref).exists(), f"{page.name}: {ref}"


@pytest.mark.django_db
@pytest.mark.parametrize("path", sorted((RUNBOOK / "sql").glob("*.sql")), ids=lambda p: p.name)
def test_the_diagnosis_queries_run(path, prices):
    with connection.cursor() as cur:
        cur.execute(path.read_text())
        assert cur.description
