from django.urls import path

from realtime.consumers import StudentEventsConsumer

websocket_urlpatterns = [path("ws/events/", StudentEventsConsumer.as_asgi())]
