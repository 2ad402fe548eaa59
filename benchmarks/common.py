"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import hashlib
import os
import time

import bidijax


def source_fingerprint() -> str:
    """sha1 (12 hex) of bidijax's Python sources and the newest file's mtime: the code measured."""
    root = os.path.dirname(os.path.abspath(bidijax.__file__))
    h, newest = hashlib.sha1(), 0.0
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path, "rb") as fh:
                    h.update(path[len(root) :].encode() + b"\0" + fh.read())
                newest = max(newest, os.path.getmtime(path))
    return f"{h.hexdigest()[:12]} (newest file {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(newest))})"
