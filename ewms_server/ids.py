"""Readable, time-ordered ids: `<PREFIX>-<ms since epoch, hex>-<counter>-<random>`.

String order is creation order within one process (the counter breaks ties within a
millisecond) and close to it across replicas; the random part makes collisions rare, and
the unique indexes catch the rest (callers retry).
"""

from __future__ import annotations

import secrets
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id(prefix: str) -> str:
    global _last_ms, _counter
    with _lock:
        ms = int(time.time() * 1000)
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFFF:  # more than 65,536 ids in one ms: borrow the next ms
                ms += 1
                _counter = 0
        else:
            _counter = 0
        _last_ms = ms
        counter = _counter
    return f"{prefix}-{ms:012x}-{counter:04x}-{secrets.token_hex(3)}"
