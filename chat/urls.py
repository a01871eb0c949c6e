"""The chat app's URLs: conversations, search, usage and comparisons (see each room's views)."""

from __future__ import annotations

from django.urls import path

from chat.accounts import views as accounts
from chat.compare import views as compare
from chat.conversations import actions, uploads
from chat.conversations import views as conversations

app_name = "chat"

urlpatterns = [
    path("", conversations.index, name="index"),
    path("c/new/", conversations.new_conversation, name="new"),
    path("c/<int:conversation_id>/", conversations.conversation_page, name="conversation"),
    path("c/<int:conversation_id>/settings/", conversations.update_settings, name="settings"),
    path("c/<int:conversation_id>/rename/", conversations.rename_conversation, name="rename"),
    path("c/<int:conversation_id>/delete/", conversations.delete_conversation, name="delete"),
    path("c/<int:conversation_id>/export.json", conversations.export_json, name="export_json"),
    path("c/<int:conversation_id>/export.md", actions.export_markdown, name="export_md"),
    path(
        "c/<int:conversation_id>/restore/",
        actions.restore_conversation,
        name="restore",
    ),
    path(
        "c/<int:conversation_id>/versions/<int:answer_id>/",
        actions.choose_version,
        name="choose_version",
    ),
    path("search/", actions.search, name="search"),
    path("images/upload/", uploads.upload_image, name="upload_image"),
    path("images/<uuid:image_id>/", uploads.image, name="image"),
    path("images/<uuid:image_id>/remove/", uploads.remove_image, name="remove_image"),
    path("usage/", accounts.usage_page, name="usage"),
    path("compare/", compare.compare, name="compare"),
    path("compare/history/", compare.history, name="compare_history"),
    path("compare/<int:run_id>/", compare.run_page, name="compare_run"),
    path("compare/<int:run_id>/present/", compare.present, name="compare_present"),
    path("compare/<int:run_id>.json", compare.export_json, name="compare_json"),
    path("compare/<int:run_id>.csv", compare.export_csv, name="compare_csv"),
]
