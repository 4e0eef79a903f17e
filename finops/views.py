from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from finops import metrics


@require_GET
def metrics_view(request):
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


@require_GET
def health_view(request):
    return JsonResponse({"status": "ok"})
