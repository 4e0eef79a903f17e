from django.apps import AppConfig


class EmbeddingsConfig(AppConfig):
    """Prompt embeddings (local MiniLM or a remote endpoint), shared by the semantic cache and the router."""

    name = "apps.embeddings"
    label = "embeddings"

    def ready(self) -> None:
        from apps.embeddings import checks  # noqa: F401  (registers the system checks)
