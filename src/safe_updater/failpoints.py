"""Crash injection for the kill-matrix tests, in the manner of etcd's gofail.

``SAFE_UPDATER_FAILPOINTS=after-apply,mid-verify`` makes the process kill itself with SIGKILL
when it reaches one of the named points, exactly as ``kill -9`` would, so tests can prove that
``safe-updater recover`` finishes every attempt from the journal. Unset (always, in
production), a failpoint costs one dictionary lookup.

Points: ``after-open``, ``after-phase:<phase>`` (right after the journal write of that phase),
``after-pull``, ``after-apply``, ``mid-verify`` (after the first health sample), ``mid-rollback``
(half-way through a Docker rollback), ``after-quarantine``.
"""

from __future__ import annotations

import os
import signal

ENV = "SAFE_UPDATER_FAILPOINTS"


def failpoint(name: str) -> None:
    armed = os.environ.get(ENV)
    if armed and name in armed.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
