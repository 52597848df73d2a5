"""Channels routes of the streaming app (filled in by the streaming issue)."""

from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

http_urlpatterns: list = []
websocket_urlpatterns: list = []

websocket_application = AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns))
