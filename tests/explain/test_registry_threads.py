"""The method registry fills itself on first use; concurrent first callers
(a fresh server's first requests) must all see every method, not a
half-imported registry ("unknown method 'integrated_gradients'; choose one
of " with an empty list, as `tests/test_shutdown.py` hit through `netscope serve`)."""
from __future__ import annotations

import subprocess
import sys

FIRST_CALLS = """
import threading
from netscope.server.explain import methods as registry
barrier = threading.Barrier(8)
errors = []
def ask():
    barrier.wait()
    try:
        registry.method("integrated_gradients")
    except Exception as exc:
        errors.append(str(exc))
threads = [threading.Thread(target=ask) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors)
"""


def test_concurrent_first_lookups_see_the_whole_registry():
    # A fresh interpreter: in this session the registry is already loaded.
    proc = subprocess.run([sys.executable, "-c", FIRST_CALLS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
