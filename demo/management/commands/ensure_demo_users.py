import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from finops.envfile import STATE_DIR


class Command(BaseCommand):
    help = "Create the local `admin` superuser and a `finance` staff user (random passwords, saved to .finops/credentials)."

    def handle(self, *args, **options):
        User = get_user_model()
        credentials = STATE_DIR / "credentials"
        if credentials.exists() and User.objects.filter(username="admin").exists():
            self.stdout.write(f"demo users exist; credentials in {credentials}")
            return
        lines = []
        for username, superuser in (("admin", True), ("finance", False)):
            password = secrets.token_urlsafe(12)
            user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@finops.local"})
            user.is_staff = True
            user.is_superuser = superuser
            user.set_password(password)
            user.save()
            if not superuser:
                group, _ = Group.objects.get_or_create(name="finance")
                user.groups.add(group)
            lines.append(f"{username} {password}")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        credentials.write_text("# username password (local demo users)\n" + "\n".join(lines) + "\n")
        credentials.chmod(0o600)
        self.stdout.write(f"demo users created; credentials in {credentials}")
