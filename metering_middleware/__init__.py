"""metering_middleware: metering and rating for gateways in front of Alibaba Cloud VIAPI."""

__all__: list[str] = []
