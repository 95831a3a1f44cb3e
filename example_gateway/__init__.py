"""A runnable VIAPI gateway: a streaming proxy with the meter mounted, and a mock VIAPI."""

__all__: list[str] = []
