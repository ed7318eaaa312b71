"""The service layer: command handlers and queries over the domain."""

from downloads.service.handlers import Clock, DownloadsService, Reply, ServiceObserver, system_clock

__all__ = ["Clock", "DownloadsService", "Reply", "ServiceObserver", "system_clock"]
