"""Crash injection for the kill-matrix tests, in the manner of etcd's gofail.

``SAFE_UPDATER_FAILPOINTS=after-apply,mid-verify`` makes the process kill itself with SIGKILL
when it reaches one of the named points, exactly as ``kill -9`` would, so tests can prove that
``safe-updater recover`` finishes every attempt from the journal. Unset (always, in
production), a failpoint costs one dictionary lookup.

Points:

* ``after-open``: the journal row is open, nothing else happened.
* ``after-phase:<phase>``: right after the journal write of that phase.
* ``after-pull``: after preflight. Docker pulls the image there; ``k8s:`` and ``helm:`` assets
  pull nothing (their preflight asks the registry for the tag's digest and runs a server-side
  dry-run), so for them the point is "preflight passed, nothing changed".
* ``after-apply``: the change is live, the journal still says ``applying``.
* ``mid-verify``: after the first health sample.
* ``mid-rollback``: half-way through a rollback, at its worst place. Docker: the new container
  is removed and the old one not yet renamed back (nothing runs). Kubernetes: the template's
  image is patched back, the pods of the failed revision are not yet replaced (nor, for a
  StatefulSet, deleted). Helm: ``helm rollback --wait`` is under way (its revision is
  ``pending-rollback``); the process dies one second into it (:func:`failpoint_during`) and the
  helm child lives on as an orphan, as it would after a ``kill -9`` of the updater alone.
* ``after-quarantine``: the bad version is quarantined, the attempt not yet closed.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "SAFE_UPDATER_FAILPOINTS"


def _armed(name: str) -> bool:
    armed = os.environ.get(ENV)
    return bool(armed) and name in str(armed).split(",")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def failpoint(name: str) -> None:
    if _armed(name):
        _die()


@contextmanager
def failpoint_during(name: str, after: float) -> Iterator[None]:
    """Kill the process ``after`` seconds into the block, or as it ends if that comes first.

    For steps that are one blocking call to another program (``helm rollback --wait``): the
    worst place to die is while that program works, which a point before or after the call
    cannot reach.
    """
    if not _armed(name):
        yield
        return
    timer = threading.Timer(after, _die)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        _die()
