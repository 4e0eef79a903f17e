from __future__ import annotations

import openai
import pytest

from apps.ledger.models import LLMRequest

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_lists_the_priced_models_and_the_router(gateway_url, tenant):
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=tenant.secret, max_retries=0)
    ids = {model.id for model in client.models.list()}
    assert {"gpt-4o-mini", "gpt-4o", "auto"} <= ids
    assert client.models.retrieve("gpt-4o-mini").owned_by == "mock"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9-ultra")
    assert LLMRequest.objects.count() == 0  # listing models is not an LLM request


def test_it_needs_a_valid_key(gateway_url, tenant):
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="fo-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
