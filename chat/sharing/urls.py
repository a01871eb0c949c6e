"""Share links (``/s/…``): the public page of a token, and the owner's panel and actions."""

from __future__ import annotations

from django.urls import path

from chat.sharing import views

app_name = "sharing"

urlpatterns = [
    path("run/<int:run_id>/", views.run_links, name="run_links"),
    path("run/<int:run_id>/new/", views.create_run_link, name="create_run_link"),
    path("c/<int:conversation_id>/", views.conversation_links, name="conversation_links"),
    path(
        "c/<int:conversation_id>/new/",
        views.create_conversation_link,
        name="create_conversation_link",
    ),
    path("links/<int:link_id>/revoke/", views.revoke_link, name="revoke"),
    path("<slug:token>/", views.shared, name="shared"),
    path("<slug:token>/images/<uuid:image_id>/", views.shared_image, name="image"),
]
