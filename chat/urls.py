from __future__ import annotations

from django.urls import path

from . import compare_views, conversation_views, usage_views, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("c/new/", views.new_conversation, name="new"),
    path("c/<int:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/<int:conversation_id>/settings/", views.update_settings, name="settings"),
    path("c/<int:conversation_id>/rename/", views.rename_conversation, name="rename"),
    path("c/<int:conversation_id>/delete/", views.delete_conversation, name="delete"),
    path("c/<int:conversation_id>/export.json", views.export_json, name="export_json"),
    path("c/<int:conversation_id>/export.md", conversation_views.export_markdown, name="export_md"),
    path(
        "c/<int:conversation_id>/restore/",
        conversation_views.restore_conversation,
        name="restore",
    ),
    path(
        "c/<int:conversation_id>/versions/<int:answer_id>/",
        conversation_views.choose_version,
        name="choose_version",
    ),
    path("search/", conversation_views.search, name="search"),
    path("usage/", usage_views.usage_page, name="usage"),
    path("compare/", compare_views.compare, name="compare"),
    path("compare/history/", compare_views.history, name="compare_history"),
    path("compare/<int:run_id>/", compare_views.run_page, name="compare_run"),
    path("compare/<int:run_id>.json", compare_views.export_json, name="compare_json"),
    path("compare/<int:run_id>.csv", compare_views.export_csv, name="compare_csv"),
]
