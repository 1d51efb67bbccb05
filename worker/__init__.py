"""mediaworker: turns registered media items in a bucket into what a browser viewer needs."""

__version__ = "0.1.0"
PIPELINE_VERSION = "1"
"""Bumped whenever outputs change; `reprocess` redoes items committed with an older one."""
