from __future__ import annotations

from django.urls import path

from chat.compare.consumer import CompareConsumer
from chat.conversations.consumer import ChatConsumer

websocket_urlpatterns = [
    path("ws/c/<int:conversation_id>/", ChatConsumer.as_asgi()),
    path("ws/compare/", CompareConsumer.as_asgi()),
    path("ws/compare/<int:run_id>/", CompareConsumer.as_asgi()),
]
