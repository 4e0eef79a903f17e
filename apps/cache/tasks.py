from celery import shared_task

from apps.cache.services import cache_invalidate, cache_purge_expired
from finops.jobs import tracked_job


@shared_task(name="apps.cache.tasks.cache_purge_expired_task")
@tracked_job("cache_purge_expired")
def cache_purge_expired_task() -> str:
    result = cache_purge_expired()
    return f"semantic_deleted={result.semantic_deleted} index_pruned={result.index_pruned}"


@shared_task(name="apps.cache.tasks.cache_invalidate_task")
def cache_invalidate_task(org_id: int, model_class: str | None = None) -> str:
    result = cache_invalidate(org_id=org_id, model_class=model_class)
    return f"semantic_deleted={result.semantic_deleted} exact_deleted={result.exact_deleted}"
