import os

from finops.envfile import load_env_file

load_env_file()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

# The admin's CSS/JS are served from the installed apps' static folders (no collectstatic, no extra
# server), so `make run` and the compose image show a styled admin. Behind a CDN or reverse proxy in
# a large deployment, /static/ can be served there instead; this handler then never sees the requests.
django_application = ASGIStaticFilesHandler(get_asgi_application())

# /v1/* (the OpenAI-compatible hot path) is served by a lean ASGI app in front of Django; see apps/gateway/asgi.py.
from apps.gateway.asgi import GatewayASGI  # noqa: E402

application = GatewayASGI(django_application)
