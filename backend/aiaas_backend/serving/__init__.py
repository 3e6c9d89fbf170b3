"""Serving trained runs: replica processes behind a batching router in the API server."""
