from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from api.courses import CoursesApi
from api.me import DashboardApi, EventsApi
from api.payments import PaymentWebhookApi
from api.profile import ProfileApi
from api.sessions import SessionRescheduleApi
from outbox.health import healthz_view, livez_view, readyz_view
from outbox.metrics import metrics_view
from realtime.docs import websocket_docs
from student_page.views import student_page

REDOC = "realtime/redoc.html"
handler404 = "api.errors.json_404"
handler500 = "api.errors.json_500"

urlpatterns = [
    path("", student_page, name="student-page"),
    path("healthz", healthz_view, name="healthz"),
    path("livez", livez_view, name="livez"),
    path("readyz", readyz_view, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/payments/webhook", PaymentWebhookApi.as_view(), name="payment-webhook"),
    path("api/v1/me/dashboard", DashboardApi.as_view(), name="me-dashboard"),
    path("api/v1/me/events", EventsApi.as_view(), name="me-events"),
    path("api/v1/me/profile", ProfileApi.as_view(), name="me-profile"),
    path(
        "api/v1/me/sessions/<int:session_id>/reschedule", SessionRescheduleApi.as_view(), name="me-session-reschedule"
    ),
    path("api/v1/courses", CoursesApi.as_view(), name="courses"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/docs/websocket/", websocket_docs, name="docs-websocket"),
    path(
        "api/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="realtime/redoc.html"), name="redoc"
    ),
]
