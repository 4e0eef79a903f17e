import hmac
import ipaddress

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from finops import metrics
from finops.conf import conf


def metrics_access_refusal(*, authorization: str, client: str) -> tuple[int, str] | None:
    """Why this scrape is refused, as (HTTP status, message); None when it may read /metrics.

    With FINOPS_METRICS_TOKEN set, every scrape needs `Authorization: Bearer <token>` (loopback included: behind
    a reverse proxy on the same host every client looks local). Without one, only loopback clients may scrape.
    """
    token = conf().metrics_token
    if token:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return None
        return 401, "This endpoint needs 'Authorization: Bearer <FINOPS_METRICS_TOKEN>'."
    try:
        loopback = ipaddress.ip_address(client).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return 403, "Metrics are served to loopback clients only; set FINOPS_METRICS_TOKEN to let Prometheus scrape from elsewhere."


@require_GET
def metrics_view(request):
    refusal = metrics_access_refusal(
        authorization=request.headers.get("Authorization", ""), client=request.META.get("REMOTE_ADDR") or ""
    )
    if refusal is not None:
        status, message = refusal
        response = JsonResponse(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "metrics_unauthorized"}},
            status=status,
        )
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


@require_GET
def health_view(request):
    return JsonResponse({"status": "ok"})
