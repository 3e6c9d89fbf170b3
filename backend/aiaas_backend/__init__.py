"""The aiaas backend service: API server, store, executors and the worker."""
