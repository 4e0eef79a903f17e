from django.core.management.base import BaseCommand, CommandError

from apps.cache.services import cache_invalidate
from apps.tenancy.models import Organization


class Command(BaseCommand):
    help = "Delete an org's cached answers, both tiers (optionally only one requested model / route class)."

    def add_arguments(self, parser):
        parser.add_argument("org", help="organization slug or id")
        parser.add_argument("--model", dest="model_class", help="only this requested model / route class, e.g. 'auto'")

    def handle(self, *args, org: str, model_class: str | None, **options):
        found = Organization.objects.filter(slug=org).first() or (
            Organization.objects.filter(pk=org).first() if org.isdigit() else None
        )
        if found is None:
            raise CommandError(f"no organization {org!r}")
        result = cache_invalidate(org_id=found.pk, model_class=model_class)
        self.stdout.write(f"{found}: deleted {result.semantic_deleted} semantic and {result.exact_deleted} exact entries")
