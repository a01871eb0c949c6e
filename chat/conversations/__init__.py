"""Conversations: the chat page, its settings, history work (search, export, undo, versions)
and its socket."""
