"""The product's URLs plus the naive webhook baseline (benchmark processes only)."""

from django.urls import path

from benchmarks.harness import NAIVE_WEBHOOK_PATH
from benchmarks.naive import NaiveWebhookApi
from config.urls import handler404, handler500
from config.urls import urlpatterns as product_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]

urlpatterns = [*product_urlpatterns, path(NAIVE_WEBHOOK_PATH, NaiveWebhookApi.as_view(), name="bench-naive-webhook")]
