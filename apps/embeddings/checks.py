"""System checks of the embeddings app."""

from __future__ import annotations

from django.core import checks

from finops.conf import conf


@checks.register()
def cache_local_runtime_is_known(app_configs, **kwargs):
    """A typo in FINOPS_CACHE_LOCAL_RUNTIME would otherwise only show as a warm-up warning and a silent semantic tier."""
    from apps.embeddings.embeddings import LOCAL_RUNTIMES

    runtime = conf().cache_local_runtime or "onnx-int8"
    if runtime not in LOCAL_RUNTIMES:
        return [
            checks.Error(
                f"FINOPS_CACHE_LOCAL_RUNTIME={runtime!r} is not one of {', '.join(LOCAL_RUNTIMES)}.",
                id="finops.E003",
            )
        ]
    return []
