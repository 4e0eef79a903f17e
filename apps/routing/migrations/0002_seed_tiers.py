"""Seed the default ladder (cheap / mid / premium), the RouteLLM eval ladder, the global policies and starter keyword rules."""

from django.db import migrations

DEFAULT_TIERS = [
    # (ladder, name, rank, complexity_min, [(model, quality)])
    ("default", "cheap", 0, 0.0, [("gpt-4o-mini", 0.60)]),
    ("default", "mid", 1, 0.30, [("gpt-4.1-mini", 0.72)]),
    ("default", "premium", 2, 0.45, [("gpt-4o", 0.85)]),
    # RouteLLM's recorded pair; qualities are GSM8K accuracies until eval_router --learn-quality refines them.
    ("eval", "cheap", 0, 0.0, [("mixtral-8x7b-instruct", 0.64)]),
    ("eval", "premium", 2, 0.45, [("gpt-4-1106-preview", 0.86)]),
]

RULES = [
    # (name, match, pattern, tier, priority)
    ("legal", "terms", "legal, contract, contracts, lawsuit, liability, indemnify, indemnification, clause, statute, "
     "jurisdiction, litigation, GDPR, compliance, attorney, plaintiff, defendant", "premium", 100),
    ("stack trace", "regex", r"Traceback \(most recent call last\)|Exception in thread|^\s+at [\w.$]+\(.*\)$|\bpanic: |"
     r"segmentation fault|core dumped|\bFile \".*\", line \d+", "premium", 90),
    ("medical", "terms", "diagnosis, dosage, contraindication, contraindications, prognosis, differential diagnosis",
     "premium", 80),
    ("simple rewrite", "regex", r"^\s*(?:hi|hello|hey|thanks|thank you)\b|\b(?:translate|summari[sz]e|paraphrase|rephrase|"
     r"fix (?:the )?(?:typos?|grammar|spelling)|proofread)\b", "cheap", 50),
]


def seed(apps, schema_editor):
    Tier = apps.get_model("routing", "Tier")
    TierModel = apps.get_model("routing", "TierModel")
    RoutePolicy = apps.get_model("routing", "RoutePolicy")
    KeywordRule = apps.get_model("routing", "KeywordRule")
    for ladder, name, rank, cmin, models in DEFAULT_TIERS:
        tier, _ = Tier.objects.get_or_create(ladder=ladder, name=name, defaults={"rank": rank, "complexity_min": cmin})
        for model, quality in models:
            TierModel.objects.get_or_create(tier=tier, model=model, defaults={"quality": quality})
    RoutePolicy.objects.get_or_create(org=None, name="", defaults={"ladder": "default"})
    RoutePolicy.objects.get_or_create(org=None, name="eval", defaults={"ladder": "eval"})
    for name, match, pattern, tier, priority in RULES:
        KeywordRule.objects.get_or_create(
            org=None, name=name, defaults={"match": match, "pattern": pattern, "tier": tier, "priority": priority}
        )


def unseed(apps, schema_editor):
    apps.get_model("routing", "KeywordRule").objects.filter(org=None, name__in=[r[0] for r in RULES]).delete()
    apps.get_model("routing", "RoutePolicy").objects.filter(org=None, name__in=["", "eval"]).delete()
    apps.get_model("routing", "Tier").objects.filter(ladder__in=["default", "eval"]).delete()


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
