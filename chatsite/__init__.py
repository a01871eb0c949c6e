"""Project package: settings, ASGI routing and URLs for Streamside."""
