"""Real servers for tests: the example gateway's in-loop uvicorn runner."""

from example_gateway.serving import free_port, run_server

__all__ = ["free_port", "run_server"]
