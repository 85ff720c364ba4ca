"""The HTTP service's core: endpoints, request/response schemas, metrics, the ASGI middleware and the event spool."""
