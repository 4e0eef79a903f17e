from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "apps.routing"
    label = "routing"
    verbose_name = "Routing"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.ledger.models import ModelPrice
        from apps.routing.models import KeywordRule, RoutePolicy, Tier, TierModel
        from apps.routing.selectors import router_config_invalidate

        # A routing or price edit takes effect in this process at once; other workers within ROUTER_CONFIG_TTL_S.
        for model in (Tier, TierModel, RoutePolicy, KeywordRule, ModelPrice):
            post_save.connect(router_config_invalidate, sender=model, dispatch_uid=f"routing-invalidate-save-{model.__name__}")
            post_delete.connect(
                router_config_invalidate, sender=model, dispatch_uid=f"routing-invalidate-delete-{model.__name__}"
            )
