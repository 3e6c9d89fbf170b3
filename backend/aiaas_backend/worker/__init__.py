"""The worker: the only process that unpickles user code.

``python -m aiaas_backend.worker`` imports torch and Lightning first, then
waits for one JSON assignment line on stdin; the executor keeps such a warm
worker ready so a run starts without paying for the imports.
"""
