from .base import Executor

__all__ = ["Executor"]
