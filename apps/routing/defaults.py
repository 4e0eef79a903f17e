"""The seeded routing configuration, shared by the data migration and `routing_defaults_ensure()`.

Plain data plus one function that takes the model classes, so the migration can pass its historical
models and tests (whose transactional flushes empty the tables) can re-create the same rows.
"""

from __future__ import annotations

TIERS = [
    # (ladder, tier, rank, complexity_min, [(model, quality)])
    ("default", "cheap", 0, 0.0, [("gpt-4o-mini", 0.60)]),
    ("default", "mid", 1, 0.15, [("gpt-4.1-mini", 0.72)]),
    ("default", "premium", 2, 0.30, [("gpt-4o", 0.85)]),
    # RouteLLM's recorded pair; qualities are GSM8K accuracies until eval_router --learn-quality refines them.
    ("eval", "cheap", 0, 0.0, [("mixtral-8x7b-instruct", 0.64)]),
    ("eval", "premium", 2, 0.25, [("gpt-4-1106-preview", 0.86)]),
]

POLICIES = [
    # (route name, ladder, other fields); org-less = everyone's. Name "" is the default route (model "auto").
    ("", "default", {}),
    # The learned index's labels are this ladder's pair (RouteLLM's Mixtral-8x7B / GPT-4-1106 outcomes), so the
    # learned strategy is on here; other routes opt in (RoutePolicy.use_learned).
    ("eval", "eval", {"use_learned": True}),
]

RULES = [
    # (name, match, pattern, tier, priority, scope). Terms rules are the fast kind (a substring pre-check);
    # keep regexes anchored or literal-led: they run on every routed request.
    (
        "legal",
        "terms",
        "legal, contract, contracts, lawsuit, liability, indemnify, indemnification, clause, statute, "
        "jurisdiction, litigation, GDPR, compliance, attorney, plaintiff, defendant",
        "premium",
        100,
        "all",
    ),
    (
        "stack trace",
        "terms",
        "Traceback (most recent call last), Exception in thread, stack trace, stacktrace, "
        "NullPointerException, segmentation fault, core dumped, panic:",
        "premium",
        90,
        "all",
    ),
    (
        "medical",
        "terms",
        "diagnosis, dosage, contraindication, contraindications, prognosis, differential diagnosis",
        "premium",
        80,
        "all",
    ),
    (
        "simple rewrite",
        "terms",
        "translate, summarize, summarise, paraphrase, rephrase, proofread, fix the typos, fix typos, "
        "fix the grammar, fix grammar, fix spelling",
        "cheap",
        50,
        "last_user",
    ),
    ("greeting", "regex", r"\A\s*(?:hi|hello|hey|thanks|thank you)\b[\s!.,]*\Z", "cheap", 40, "last_user"),
]


def seed(*, Tier, TierModel, RoutePolicy, KeywordRule) -> None:  # noqa: N803 (model classes)
    """Create the default rows that are missing; never overwrites an admin's edits."""
    for ladder, name, rank, cmin, models in TIERS:
        tier, _ = Tier.objects.get_or_create(ladder=ladder, name=name, defaults={"rank": rank, "complexity_min": cmin})
        for model, quality in models:
            TierModel.objects.get_or_create(tier=tier, model=model, defaults={"quality": quality})
    fields = {f.name for f in RoutePolicy._meta.get_fields()}  # the data migration 0002 runs before 0003's fields
    for name, ladder, extra in POLICIES:
        known = {k: v for k, v in extra.items() if k in fields}
        RoutePolicy.objects.get_or_create(org=None, name=name, defaults={"ladder": ladder, **known})
    for name, match, pattern, tier, priority, scope in RULES:
        KeywordRule.objects.get_or_create(
            org=None, name=name, defaults={"match": match, "pattern": pattern, "tier": tier, "priority": priority, "scope": scope}
        )


def unseed(*, Tier, RoutePolicy, KeywordRule) -> None:  # noqa: N803
    KeywordRule.objects.filter(org=None, name__in=[r[0] for r in RULES]).delete()
    RoutePolicy.objects.filter(org=None, name__in=[p[0] for p in POLICIES]).delete()
    Tier.objects.filter(ladder__in={t[0] for t in TIERS}).delete()
