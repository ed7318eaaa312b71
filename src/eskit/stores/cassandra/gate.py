"""Whether this process can reach a global quorum: learned from appends, confirmed by a cheap probe.

A region cut off from the others cannot make an append durable (Paxos at ``SERIAL`` needs a
quorum of all replicas). Left alone, every command there would wait for the driver's timeouts
before failing, and its Paxos prepares, still reaching the other regions in a one-way partition,
would contend with their rounds. The gate answers instead: once an append failed for want of
replicas and a probe confirmed it, appends are refused at once with :class:`QuorumUnreachable`
(the service's fast 503) until a probe succeeds again.

The probe is one plain read of a tiny row at the level of the durable writes (``QUORUM`` where
several regions write), never a Paxos round: a failed append runs it at once (so one slow
contended append in a healthy cluster does not close the gate), and while the gate is closed at
most one caller probes per ``interval`` seconds; the others are refused without a request.
While the probe after a failed append is out, a new append waits for its answer (at most
``doubt_wait`` seconds) instead of starting a Paxos round that would, cut off, spend the whole
command timeout: one queued behind another command on its account would answer only after two.
:meth:`QuorumGate.ready` (``/readyz``) probes at most once per ``interval`` when nothing else
told the gate how the cluster is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from eskit.exceptions import QuorumUnreachable

log = logging.getLogger(__name__)

__all__ = ["QuorumGate"]


class QuorumGate:
    """Open while appends reach a global quorum; closed (refusing at once) while they cannot."""

    def __init__(
        self, probe: Callable[[], None], *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``probe`` raises when a global quorum cannot be reached; it is called with no lock held."""
        self._probe = probe
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self.closed_since: float | None = None  # when appends started to be refused
        self.reason = ""
        self._known_at = clock()  # when the gate last learned how the cluster is
        self._probing = False
        #: set while no probe after a failed append is out (cleared while one is)
        self._settled = threading.Event()
        self._settled.set()
        #: the longest an append waits for that probe's answer (the probe's own timeout bounds it first)
        self.doubt_wait = 2.0

    @property
    def is_open(self) -> bool:
        return self.closed_since is None

    def allows(self) -> bool:
        """Whether a request that needs a global quorum may go ahead now (probing first when one is due)."""
        if not self._settled.is_set():
            self._settled.wait(self.doubt_wait)
        if self.closed_since is None:
            return True
        if self._claim_probe():
            self._run_probe()
        return self.closed_since is None

    def check(self) -> None:
        """Before an append: return when it may go ahead, raise :class:`QuorumUnreachable` when not."""
        if not self.allows():
            raise QuorumUnreachable(self._message())

    def succeeded(self) -> None:
        """An append (or a probe) reached a global quorum."""
        with self._lock:
            self._known_at = self._clock()
            if self.closed_since is not None:
                log.warning("a global quorum is reachable again: accepting commands (%s)", self.reason)
            self.closed_since = None

    def failed(self, reason: str) -> None:
        """An append failed for want of replicas (unavailable, or no answer in time): probe now."""
        if self.closed_since is not None:
            return
        with self._lock:
            if self._probing:
                return
            self._probing = True
            self._settled.clear()
        try:
            self._run_probe(reason)
        finally:
            self._settled.set()

    def ready(self) -> None:
        """For readiness checks: raise :class:`QuorumUnreachable` when appends would be refused.

        Probes when the gate has learned nothing for ``interval`` seconds (at most one probe
        at a time, at most one per interval).
        """
        if self.closed_since is None and self._clock() - self._known_at < self.interval:
            return
        if self._claim_probe():
            self._run_probe()
        if self.closed_since is not None:
            raise QuorumUnreachable(self._message())

    def _claim_probe(self) -> bool:
        """Whether this caller should probe now (one at a time, one per interval)."""
        with self._lock:
            if self._probing or self._clock() - self._known_at < self.interval:
                return False
            self._probing = True
            return True

    def _run_probe(self, reason: str | None = None) -> None:
        try:
            self._probe()
        except Exception as exc:
            with self._lock:
                self._known_at = self._clock()
                if self.closed_since is None:
                    self.closed_since = self._known_at
                    self.reason = reason or f"{type(exc).__name__}: {exc}"
                    log.warning("no global quorum reachable: refusing commands (%s; probe: %s)", self.reason, exc)
        else:
            self.succeeded()
        finally:
            with self._lock:
                self._probing = False

    def _message(self) -> str:
        since = 0.0 if self.closed_since is None else self._clock() - self.closed_since
        return (
            f"this region cannot reach a quorum of the other regions' replicas (for {since:.0f}s: {self.reason}); "
            "commands are refused until it can, reads still answer"
        )
