import os

from finops.envfile import load_env_file

load_env_file()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

# /v1/* (the OpenAI-compatible hot path) is served by a lean ASGI app in front of Django; see apps/gateway/asgi.py.
from apps.gateway.asgi import GatewayASGI  # noqa: E402

application = GatewayASGI(django_application)
