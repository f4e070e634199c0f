"""The service as a real uvicorn process: the starter the benchmark uses too."""

from bench.service import PROJECT_ROOT, ServiceProcess

__all__ = ["PROJECT_ROOT", "ServiceProcess"]
