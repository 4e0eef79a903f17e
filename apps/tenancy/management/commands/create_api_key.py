from django.core.management.base import BaseCommand

from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create


class Command(BaseCommand):
    help = "Create an API key for org/team/user (created if missing). The secret is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True)
        parser.add_argument("--team", required=True)
        parser.add_argument("--user", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--rate-limit-per-minute", type=int, default=0)

    def handle(self, *args, **options):
        org = org_get_or_create(name=options["org"])
        team = team_get_or_create(org=org, name=options["team"])
        member = member_get_or_create(team=team, username=options["user"])
        created = api_key_create(member=member, name=options["name"], rate_limit_per_minute=options["rate_limit_per_minute"])
        self.stderr.write(f"Created key {created.api_key.prefix}… for {member} — store it now, it is not shown again:")
        self.stdout.write(created.secret)
