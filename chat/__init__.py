"""The chat app: conversations, the generation service and the websocket relay."""
