import os

from finops.envfile import load_env_file

load_env_file()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
