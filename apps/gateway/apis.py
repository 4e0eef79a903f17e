"""`POST /chat`: the native API — a DRF serializer in front of the same pipeline as /v1/chat/completions.

The view is async (adrf) and authenticates with the pipeline's own key lookup (asyncpg + cache), not
with DRF's ORM-based authentication, so no thread is spent on it. Its settlement and ledger row are
deferred until Django has sent the response (see `pipeline.deferred_work`).
"""

from __future__ import annotations

from typing import Any

from adrf.views import APIView
from django.core.exceptions import RequestDataTooBig
from django.http.request import RawPostDataException
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.gateway import pipeline
from finops.conf import conf
from finops.errors import BadRequest, FinopsError, PayloadTooLarge


class ChatApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    class InputSerializer(serializers.Serializer):
        model = serializers.CharField(
            required=False, max_length=128, help_text="A concrete model, or a router name such as 'auto' (the default)."
        )
        messages = serializers.ListField(
            child=serializers.DictField(), required=False, allow_empty=False, help_text="OpenAI-style messages."
        )
        prompt = serializers.CharField(required=False, help_text="Shorthand for one user message.")
        system = serializers.CharField(required=False, help_text="An optional system message put before `prompt`.")
        max_tokens = serializers.IntegerField(required=False, min_value=1)
        temperature = serializers.FloatField(required=False, min_value=0, max_value=2)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("messages" in attrs) == ("prompt" in attrs):
                raise serializers.ValidationError("Send either 'messages' or 'prompt'.")
            if "system" in attrs and "prompt" not in attrs:
                raise serializers.ValidationError("'system' goes with 'prompt'; put it in 'messages' otherwise.")
            return attrs

    class OutputSerializer(serializers.Serializer):
        request_id = serializers.UUIDField()
        content = serializers.CharField(allow_null=True)
        finish_reason = serializers.CharField(allow_null=True)
        model = serializers.CharField()
        provider = serializers.CharField()
        tier = serializers.CharField()
        cost_usd = serializers.DecimalField(max_digits=20, decimal_places=10, coerce_to_string=True)
        saved_usd = serializers.DecimalField(max_digits=20, decimal_places=10, coerce_to_string=True)
        prompt_tokens = serializers.IntegerField()
        completion_tokens = serializers.IntegerField()
        cached_tokens = serializers.IntegerField()
        cache = serializers.ChoiceField(choices=["miss", "exact", "semantic", "bypass", "none"])
        route = serializers.DictField()
        budget = serializers.DictField()

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer},
        summary="Ask a model (native API)",
        description="Same pipeline, headers and ledger row as POST /v1/chat/completions; errors are OpenAI error JSON.",
    )
    async def post(self, request):
        ctx = pipeline.stage1_receive(
            "chat", {k.lower(): v for k, v in request.headers.items()}, client=request.META.get("REMOTE_ADDR") or ""
        )
        body: dict[str, Any] = {}
        rejection: FinopsError | None = None
        try:
            data = request.data
        except ParseError as exc:
            rejection = BadRequest(f"We could not parse the JSON body of your request: {exc.detail}", code="invalid_json")
        except RequestDataTooBig:
            rejection = PayloadTooLarge("The request body is too large.", code="request_too_large")
        except (RawPostDataException, UnicodeDecodeError) as exc:
            rejection = BadRequest(str(exc), code="invalid_json")
        else:
            serializer = self.InputSerializer(data=data)
            if serializer.is_valid():
                body = self._openai_body(serializer.validated_data)
            else:
                body = data if isinstance(data, dict) else {}
                rejection = self._validation_error(serializer.errors)
        # Django cancels this view if the client disconnects: the request still ends (settled, recorded) on its own.
        reply = await pipeline.chat_to_the_end(
            ctx, authorization=request.headers.get("Authorization"), body=body, rejection=rejection
        )
        await pipeline.finalize_after_response(reply)
        if reply.status != 200:
            return Response(reply.payload, status=reply.status, headers=reply.headers)
        completion = reply.payload
        choice = (completion.get("choices") or [{}])[0]
        output = {
            **completion["finops"],
            "content": (choice.get("message") or {}).get("content"),
            "finish_reason": choice.get("finish_reason"),
        }
        return Response(output, status=200, headers=reply.headers)

    @staticmethod
    def _openai_body(data: dict[str, Any]) -> dict[str, Any]:

        router_models = conf().gateway_router_models
        if "messages" in data:
            messages = data["messages"]
        else:
            messages = ([{"role": "system", "content": data["system"]}] if data.get("system") else []) + [
                {"role": "user", "content": data["prompt"]}
            ]
        body: dict[str, Any] = {"model": data.get("model") or (router_models[0] if router_models else ""), "messages": messages}
        for name in ("max_tokens", "temperature"):
            if name in data:
                body[name] = data[name]
        return body

    @staticmethod
    def _validation_error(errors: dict[str, Any]) -> BadRequest:
        field, messages = next(iter(errors.items()))
        message = messages[0] if isinstance(messages, list) and messages else str(messages)
        if isinstance(message, dict):  # nested (e.g. messages[0]) errors
            message = str(message)
        param = None if field == "non_field_errors" else field
        return BadRequest(f"{field}: {message}" if param else str(message), param=param)
