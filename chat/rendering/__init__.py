"""Rendering: message fragments and frames, safe markdown, cached articles, language."""
