"""HTTP and ASGI plumbing shared by every app: the ASGI handlers, middleware, the error handlers,
the JSON parser, throttles, the client address, `AsyncAPIView`, and the daphne and shutdown hooks."""
