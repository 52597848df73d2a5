"""Configuration only: settings read from the environment, URLs, and ASGI routing."""
