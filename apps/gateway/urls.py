from django.urls import path

from apps.gateway.apis import ChatApi

# /v1/chat/completions and /v1/models are served by the lean ASGI app in front of Django (apps/gateway/asgi.py).
urlpatterns = [
    path("chat", ChatApi.as_view(), name="chat"),
]
