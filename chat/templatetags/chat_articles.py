from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from chat.rendering.articles import articles
from chat.rendering.fragments import MessageView

register = template.Library()


@register.simple_tag
def message_article(view: MessageView) -> SafeString:
    """One message of the chat page, as ``chat/_message.html`` draws it (kept once finished)."""
    return articles.render(view)
