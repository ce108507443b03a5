"""Who each cgroup of a followed host is, from cAdvisor's spec API, cached for the events that name it.

cAdvisor stores a container's spec before it emits ``containerCreation``
and forgets it before it emits ``containerDeletion``, so a spec can only be
captured at creation (:meth:`HostSpecs.created`; a cgroup created again
under a name that holds its container ID or pod UID is the same container
or pod, and keeps what is cached) or by a recursive listing
after the stream (re)connects (:meth:`HostSpecs.listing`), and must be kept
past the deletion (:meth:`HostSpecs.deleted`, for ``retention`` seconds) so
a late or replayed OOM still finds its pod. This module never asks cAdvisor
at OOM or deletion time, and no Deferred it returns ever fails: whatever
goes wrong (timeout, 500, a closed host), the answer is the best identity
known without the spec (:meth:`HostSpecs.identity`), and the failure is
counted in :attr:`SpecStore.requests`. Requests are bounded per host and
fleet-wide and coalesced per cgroup; a burst of creations on one host turns
into one recursive listing. The cache is bounded per host and fleet-wide;
what is dropped early is counted in :attr:`SpecStore.evicted`.

Raw cgroups (no labels, aliases, image or pod UID in the name) are not
cached: their identity is empty whether or not their spec was read.

It is longer than this project's modules usually are because a host's
requests and its cache are one state: a creation reads the cache and
queues a request, an answer fills the cache and answers the waiting
callers, a pod-level cgroup's answer waits on a sibling's request, and the
bounds evict across both; split, each half would reach into the other's
dicts.

Interface notes (additions only): with ``container_labels``, "unknown" is
:attr:`SpecStore.unknown` (:data:`~cadvisor_events.identity.UNKNOWN` with an
empty value per label, so every identity carries the same label names), not
``UNKNOWN`` itself; ``SpecStore(burst=...)`` sets how many queued creations
turn into one listing; ``render_into(out, openmetrics)`` writes the metrics.
"""

from __future__ import annotations

import collections
from types import MappingProxyType
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .cadvisor import Target, UnknownContainer, UpstreamError
from .identity import (Identity, cgroup_ids, identity_from_cgroup, identity_from_spec, named_by_ids,
                       unknown_identity, with_pod)

__all__ = ["HostSpecs", "SpecStore"]

log = Logger()

#: Creations queued on one host beyond which one recursive listing answers them all.
BURST = 8
Learned = Callable[[str, Identity], None]
#: The shared empty mapping of :class:`HostSpecs`' lazily made dicts (read-only: a write raises).
_EMPTY: Any = MappingProxyType({})


class _Fetch:
    """The callers waiting for one cgroup's spec, and its request once started."""

    __slots__ = ("waiters", "request", "deleted")

    def __init__(self) -> None:
        self.waiters: List[defer.Deferred] = []
        self.request: Optional[defer.Deferred] = None
        self.deleted = False  # its deletion came while the spec was being read


class HostSpecs:
    """One host's cached identities, its spec requests and the callers waiting for them.

    Get one from :meth:`SpecStore.host`. ``on_learned`` (settable) is called
    with ``(cgroup, identity)`` once per container whose spec this host
    learns (listing or creation; again only if its identity changes), raw
    cgroups excluded; a pod-level cgroup is reported once a container of its
    pod names it (in a listing: at once, containers are learned first).
    """

    __slots__ = ("store", "target", "on_learned", "_entries", "_deleted", "_pod_names", "_nameless", "_fetches",
                 "_queue", "_recorded", "_active", "_listing", "_listing_request", "_closed")

    def __init__(self, store: "SpecStore", target: Target) -> None:
        self.store = store
        self.target = target
        self.on_learned: Optional[Learned] = None
        self._entries: Dict[str, Identity] = {}  # oldest learned first
        # Dicts most hosts leave empty start as one shared read-only empty mapping, made real on
        # first write (a fleet has thousands of hosts): ``_deleted``, ``_fetches``, ``_queue``.
        self._deleted: Dict[str, float] = _EMPTY  # cgroup -> forget at; oldest deletion first
        self._pod_names: Dict[str, Identity] = {}  # pod UID -> a cached container naming the pod
        self._nameless: Dict[str, List[str]] = {}  # pod UID -> cached cgroups waiting for the pod's name
        self._fetches: Dict[str, _Fetch] = _EMPTY  # queued or in flight
        self._queue: Dict[str, None] = _EMPTY  # cgroups waiting for a request slot, in order
        #: cgroup -> the deadline of its record in the store's deletions (at most one each: a
        #: container restarted over and over adds none; its record looks again when it is due).
        self._recorded: Dict[str, float] = _EMPTY
        self._active = 0  # requests in flight (creation fetches and burst listings)
        self._listing: Optional[List[defer.Deferred]] = None  # waiters of the reconnect listing
        self._listing_request: Optional[defer.Deferred] = None
        self._closed = False

    # -- reading --------------------------------------------------------------------------

    def identity(self, cgroup: str) -> Identity:
        """The best identity known now: the cached spec's; else the pod UID from the cgroup
        name with the namespace and pod of any cached sibling of that pod; else empty."""
        entry = self._entries.get(cgroup)
        if entry is None:
            return identity_from_cgroup(cgroup, self._pod_names, self.store.unknown)
        return with_pod(entry, self._pod_names)

    def has_spec(self, cgroup: str) -> bool:
        """Whether the identity of ``cgroup`` comes from its spec (cached)."""
        return cgroup in self._entries

    @property
    def entries(self) -> int:
        """Identities cached for this host, deleted containers within retention included."""
        return len(self._entries)

    # -- events ---------------------------------------------------------------------------

    def created(self, cgroup: str) -> defer.Deferred:
        """A ``containerCreation`` of ``cgroup``: fire with its identity once its spec is read.

        Already cached and not deleted, or deleted but named by its container ID
        or pod UID (restarted under the same name: the same container, the same
        spec): at once, no request. Else one request,
        shared with any other caller waiting for the same cgroup, started as
        the per-host and fleet-wide bounds allow. Never fails: a spec that
        cannot be read gives :meth:`identity`. Cancelling the returned
        Deferred gives up this caller's wait only.
        """
        fetch = self._fetch(cgroup)
        if fetch is None:
            return defer.succeed(self.identity(cgroup))
        waiter = self._wait(fetch)
        self._pump()
        return waiter

    def fetch(self, cgroup: str) -> None:
        """:meth:`created` for a caller that does not wait for the answer (no Deferred made:
        a stream announces creations by the thousand)."""
        if cgroup in self._entries:  # :meth:`_fetch`'s cases without a request, inlined
            if cgroup not in self._deleted:
                return
            if named_by_ids(cgroup):
                del self._deleted[cgroup]
                return
        if self._fetch(cgroup) is not None:
            self._pump()

    def _fetch(self, cgroup: str) -> Optional[_Fetch]:
        """The fetch a creation of ``cgroup`` waits for (queued if new), or None: cached and
        alive, cached and named by its IDs (restarted: the same container), or closed."""
        if cgroup in self._entries:
            if cgroup not in self._deleted:
                return None
            if named_by_ids(cgroup):
                del self._deleted[cgroup]  # alive again; its record in the store is stale now
                return None
        if self._closed:
            return None
        fetch = self._fetches.get(cgroup)  # (created again after a deletion: its new spec replaces the old)
        if fetch is None:
            if self._fetches is _EMPTY:
                self._fetches = {}
            if self._queue is _EMPTY:
                self._queue = {}
            fetch = self._fetches[cgroup] = _Fetch()
            self._queue[cgroup] = None
        fetch.deleted = False
        return fetch

    def pending(self, cgroup: str) -> Optional[defer.Deferred]:
        """A Deferred firing with ``cgroup``'s identity when its queued or in-flight spec
        request ends, or ``None`` when there is none."""
        fetch = self._fetches.get(cgroup)
        return None if fetch is None else self._wait(fetch)

    def deleted(self, cgroup: str) -> None:
        """A ``containerDeletion``: keep the identity ``retention`` seconds from now (forever
        with a retention of 0, bounds permitting), then forget it. Never asks cAdvisor."""
        if cgroup not in self._entries:
            fetch = self._fetches.get(cgroup)
            if fetch is not None:  # its spec may still arrive: kept from then on, for the retention
                fetch.deleted = True
            return
        store = self.store
        retention = store.retention
        deadline = store.clock.seconds() + retention if retention > 0 else float("inf")
        deleted = self._deleted
        if deleted is _EMPTY:
            deleted = self._deleted = {}
        elif cgroup in deleted:  # (not after a creation, the usual case: it undeleted it)
            del deleted[cgroup]  # re-inserted: deletion order stays oldest first
        deleted[cgroup] = deadline
        if cgroup not in self._recorded:
            if self._recorded is _EMPTY:
                self._recorded = {}
            self._recorded[cgroup] = deadline
            self.store._deletions.append((deadline, self, cgroup))

    def listing(self) -> defer.Deferred:
        """Read every spec of the host with one recursive request (after a stream (re)connect).

        Through the store's connect gate when it has one (as a history
        request: streams first). Asked again once if cAdvisor answers 500
        because a container vanished mid-listing. Fires with ``None`` when
        done, whatever happened; calls made while one runs share it.
        """
        if self._closed:
            return defer.succeed(None)
        if self._listing is not None:
            return self._wait_listing()
        self._listing = []
        waiter = self._wait_listing()
        self._run_listing()
        return waiter

    def close(self) -> None:
        """Stop: cancel every request; waiting callers get the identity known without it."""
        if self._closed:
            return
        self._closed = True
        self.store._forget_waiting(self)
        for cgroup in list(self._queue):
            self._resolve(cgroup)
        self._queue = _EMPTY
        for fetch in list(self._fetches.values()):
            if fetch.request is not None:
                fetch.request.cancel()
        if self._listing_request is not None:
            self._listing_request.cancel()

    # -- internals ------------------------------------------------------------------------

    def _wait(self, fetch: _Fetch) -> defer.Deferred:
        waiter: defer.Deferred = defer.Deferred(lambda d: fetch.waiters.remove(d) if d in fetch.waiters else None)
        fetch.waiters.append(waiter)
        return waiter

    def _wait_listing(self) -> defer.Deferred:
        waiters = self._listing
        assert waiters is not None
        waiter: defer.Deferred = defer.Deferred(lambda d: waiters.remove(d) if d in waiters else None)
        waiters.append(waiter)
        return waiter

    def _pump(self) -> None:
        """Start queued requests while this host and the fleet have free slots."""
        store = self.store
        while self._queue and not self._closed:
            if self._active >= store.per_host_concurrency or store.active >= store.concurrency:
                store._wait_for_slot(self)
                return
            self._active += 1
            store.active += 1
            if len(self._queue) >= store.burst:
                covered = list(self._queue)
                self._queue.clear()
                request = self._request("/", True)
                for cgroup in covered:
                    self._fetches[cgroup].request = request
                request.addCallback(self._burst_done, covered)
            else:
                cgroup = next(iter(self._queue))
                del self._queue[cgroup]
                request = self._fetches[cgroup].request = self._request(cgroup, False)
                request.addCallback(self._fetch_done, cgroup)
            request.addBoth(self._slot_free)

    def _request(self, name: str, recursive: bool) -> defer.Deferred:
        """One spec request; fires with the answer, or ``None`` after a counted failure."""
        store = self.store
        try:
            request = store.client.spec(self.target, name, recursive, timeout=store.timeout)
        except Exception:  # a client bug must not leave callers waiting forever
            request = defer.fail(Failure())
        return request.addCallbacks(self._answered, self._failed, errbackArgs=(name,))

    def _answered(self, answer: Dict[str, Any]) -> Dict[str, Any]:
        self.store._count_request("ok")
        return answer

    def _failed(self, failure: Failure, name: str) -> None:
        if self._closed and failure.check(defer.CancelledError, UpstreamError):
            self.store._count_request("cancelled")
            return None
        if failure.check(UnknownContainer):
            self.store._count_request("unknown_container")
        elif failure.check(UpstreamError):
            error = failure.value
            self.store._count_request("timeout" if error.reason == "timeout" else "error")
            log.info("spec of {name} on {host}: {why}", name=name, host=self.target.name, why=error.message)
        else:
            self.store._count_request("error")
            log.failure("spec of {name} on {host}", failure, name=name, host=self.target.name)
        return None

    def _slot_free(self, result: object) -> None:
        self._active -= 1
        self.store.active -= 1
        self.store._slot_freed()
        self._pump()

    def _fetch_done(self, answer: Optional[Dict[str, Any]], cgroup: str) -> None:
        if answer is not None:
            spec = answer.get(cgroup)
            if spec is None and len(answer) == 1:  # cAdvisor names it as it cleaned the path
                spec = next(iter(answer.values()))
            if isinstance(spec, Mapping):
                self._learn(cgroup, spec)
        self._resolve(cgroup)

    def _burst_done(self, answer: Optional[Dict[str, Any]], covered: List[str]) -> None:
        if answer is not None:
            self._learn_all(answer)
        for cgroup in covered:
            self._resolve(cgroup)

    def _resolve(self, cgroup: str) -> None:
        """Answer the callers waiting for ``cgroup``. A pod-level cgroup (a pod UID, no pod
        name yet) is created just before its sandbox and containers: while a spec of the
        same pod is queued or in flight, its callers wait for that one too, so they get
        the pod's name."""
        fetch = self._fetches.pop(cgroup, None) if self._fetches else None
        if fetch is None:
            return
        if fetch.deleted:
            self.deleted(cgroup)
        identity = self.identity(cgroup)
        if identity.pod_uid and not identity.pod:
            sibling = self._fetch_of_pod(identity.pod_uid)
            if sibling is not None:
                self._wait(sibling).addCallback(lambda _: self._answer(fetch, cgroup))
                return
        self._answer(fetch, cgroup)

    def _answer(self, fetch: _Fetch, cgroup: str) -> None:
        identity = self.identity(cgroup)
        for waiter in fetch.waiters:
            waiter.callback(identity)

    def _fetch_of_pod(self, uid: str) -> Optional[_Fetch]:
        for cgroup, fetch in self._fetches.items():
            if cgroup_ids(cgroup)[0] == uid:
                return fetch
        return None

    @defer.inlineCallbacks
    def _run_listing(self):
        gate = self.store.gate
        try:
            for attempt in (1, 2):
                if gate is not None:
                    acquire = gate.acquire(stream=False)
                    self._listing_request = acquire
                    yield acquire
                try:
                    request = self._listing_request = self.store.client.spec(
                        self.target, "/", True, timeout=self.store.timeout)
                    answer = yield request.addCallback(self._answered)
                except Exception as error:  # counted below; the caller only ever gets None
                    failure = Failure(error)
                    self._failed(failure, "/ (listing)")
                    if failure.check(UnknownContainer) and attempt == 1 and not self._closed:
                        continue
                    break
                finally:
                    if gate is not None:
                        gate.release()
                self._learn_all(answer)
                break
        except defer.CancelledError:  # closed while waiting for the gate
            pass
        except Exception:
            log.failure("spec listing of {host}", host=self.target.name)
        finally:
            self._listing_request = None
            waiters, self._listing = self._listing or [], None
            for waiter in waiters:
                waiter.callback(None)

    def _learn_all(self, answer: Mapping[str, Any]) -> None:
        """Learn every spec of a listing: containers first, so pod-level cgroups (listed
        before their containers) find the pod's name through a sibling."""
        later: List[Tuple[str, Mapping[str, Any]]] = []
        for cgroup, spec in answer.items():
            if not isinstance(spec, Mapping):
                continue
            if spec.get("labels") or spec.get("aliases") or spec.get("image"):
                self._learn(cgroup, spec)
            else:
                later.append((cgroup, spec))
        for cgroup, spec in later:
            self._learn(cgroup, spec)

    def _learn(self, cgroup: str, spec: Mapping[str, Any]) -> None:
        if self._closed:
            return
        identity = identity_from_spec(spec, self.store.container_labels)
        if not identity.pod_uid:
            uid, _ = cgroup_ids(cgroup)
            if uid:
                identity = identity._replace(pod_uid=uid)
        if identity == self.store.unknown:
            return  # a raw cgroup: nothing to remember
        sibling = self._pod_names.get(identity.pod_uid) if identity.pod_uid else None
        if sibling is not None and (sibling.pod == identity.pod or not identity.pod):
            # named by a sibling, and the pod's strings kept once per pod, not once per container
            identity = identity._replace(namespace=sibling.namespace, pod=sibling.pod, pod_uid=sibling.pod_uid)
        old = self._entries.pop(cgroup, None)
        if old is None:
            self.store.entries += 1
        else:
            self._unindex(cgroup, old)
        self._entries[cgroup] = identity
        if self._deleted:
            self._deleted.pop(cgroup, None)
        if identity.pod and identity.pod_uid not in self._pod_names:
            self._pod_names[identity.pod_uid] = identity
        if identity.pod_uid and not identity.pod:
            # A pod-level cgroup learned before any container of its pod: reported once named.
            self._nameless.setdefault(identity.pod_uid, []).append(cgroup)
        elif identity != old:
            self._report(cgroup, identity)
            for member in self._nameless.pop(identity.pod_uid, ()) if identity.pod else ():
                if member in self._entries:
                    self._report(member, self.identity(member))
        self.store._enforce_bounds(self)

    def _report(self, cgroup: str, identity: Identity) -> None:
        if self.on_learned is not None:
            try:
                self.on_learned(cgroup, identity)
            except Exception:
                log.failure("on_learned for {cgroup} on {host}", cgroup=cgroup, host=self.target.name)

    def _unindex(self, cgroup: str, identity: Identity) -> None:
        """``cgroup`` (with ``identity``) leaves the cache: if it named its pod, another
        cached container of the pod names it from now on (a scan, but forgetting is rare)."""
        uid = identity.pod_uid
        if not uid:
            return
        nameless = self._nameless.get(uid)
        if nameless is not None and cgroup in nameless:
            nameless.remove(cgroup)
            if not nameless:
                del self._nameless[uid]
        if self._pod_names.get(uid) is identity:
            del self._pod_names[uid]
            for other in self._entries.values():
                if other.pod_uid == uid and other.pod:
                    self._pod_names[uid] = other
                    break

    def _drop(self, cgroup: str, reason: Optional[str]) -> None:
        """Forget one entry (counted under ``reason`` unless None)."""
        identity = self._entries.pop(cgroup, None)
        if identity is None:
            return
        if self._deleted:
            self._deleted.pop(cgroup, None)
        if self._recorded:
            self._recorded.pop(cgroup, None)
        self._unindex(cgroup, identity)
        self.store.entries -= 1
        if reason is not None:
            self.store.evicted[reason] = self.store.evicted.get(reason, 0) + 1

    def _evict_one(self, reason: str) -> bool:
        """Drop this host's oldest deleted entry, else its oldest entry; False if empty."""
        if self._deleted:
            self._drop(next(iter(self._deleted)), reason)
            return True
        if self._entries:
            self._drop(next(iter(self._entries)), reason)
            return True
        return False


class SpecStore:
    """Every followed host's :class:`HostSpecs`, and the bounds they share.

    ``client`` has ``spec(target, name, recursive, timeout=...)`` (a
    :class:`~cadvisor_events.cadvisor.CAdvisorClient`); ``clock`` is an
    ``IReactorTime``; ``gate`` (a :class:`~cadvisor_events.gate.ConnectGate`)
    orders reconnect listings behind streams. ``retention`` is how long a
    deleted container's identity is kept (0: until the bounds evict it).
    ``evicted`` counts entries dropped by reason (``retention``,
    ``max_per_host``, ``max_total``); ``requests`` counts spec requests by
    result (``ok``, ``unknown_container``, ``timeout``, ``error``,
    ``cancelled``); ``entries`` is the number cached fleet-wide.
    """

    def __init__(self, client: Any, clock: IReactorTime, *, container_labels: Sequence[str] = (),
                 retention: float = 3600.0, max_per_host: int = 2048, max_total: int = 2_000_000,
                 concurrency: int = 64, per_host_concurrency: int = 2, timeout: float = 10.0,
                 gate: Any = None, burst: int = BURST) -> None:
        if min(max_per_host, max_total, concurrency, per_host_concurrency, burst) < 1:
            raise ValueError("spec cache bounds and concurrency must be at least 1")
        self.client = client
        self.clock = clock
        self.container_labels = tuple(container_labels)
        self.unknown = unknown_identity(self.container_labels)
        self.retention = retention
        self.max_per_host = max_per_host
        self.max_total = max_total
        self.concurrency = concurrency
        self.per_host_concurrency = per_host_concurrency
        self.timeout = timeout
        self.gate = gate
        self.burst = burst
        self.evicted: Dict[str, int] = {}
        self.requests: Dict[str, int] = {}
        self.entries = 0
        self.active = 0  # spec requests in flight fleet-wide (reconnect listings excepted)
        self._hosts: Dict[str, HostSpecs] = {}
        self._waiting: Dict[HostSpecs, None] = {}  # hosts with queued requests, in order
        self._deletions: Deque[Tuple[float, HostSpecs, str]] = collections.deque()

    def host(self, target: Target) -> HostSpecs:
        """The :class:`HostSpecs` of ``target`` (made on first use)."""
        specs = self._hosts.get(target.name)
        if specs is None:
            specs = self._hosts[target.name] = HostSpecs(self, target)
        return specs

    def remove_host(self, name: str) -> None:
        """A target no longer followed: cancel its requests and forget its entries (uncounted)."""
        specs = self._hosts.pop(name, None)
        if specs is not None:
            specs.close()
            for cgroup in list(specs._entries):
                specs._drop(cgroup, None)

    def expire(self) -> None:
        """Forget deleted containers whose retention has passed (call it periodically)."""
        now = self.clock.seconds()
        deletions = self._deletions
        while deletions and deletions[0][0] <= now:
            deadline, specs, cgroup = deletions.popleft()
            if specs._recorded.get(cgroup) != deadline or self._hosts.get(specs.target.name) is not specs:
                continue  # stale: dropped meanwhile
            del specs._recorded[cgroup]
            current = specs._deleted.get(cgroup)
            if current is None:
                continue  # alive again
            if current <= now:
                specs._drop(cgroup, "retention")
            else:  # restarted and deleted again since: due at its last deletion's deadline
                specs._recorded[cgroup] = current
                deletions.append((current, specs, cgroup))
        if len(deletions) > 2 * self.entries + 1024:  # stale records (dropped): compact
            self._compact_deletions()

    def render_into(self, out: List[str], openmetrics: bool = False) -> None:
        """Append this store's self-metric families (Prometheus text or OpenMetrics)."""
        from .selfmetrics import self_metric_family

        self_metric_family(out, "spec_requests", "counter",
                "Requests to cAdvisor's spec API (container creations, listings), by result.",
                [f'cadvisor_events_spec_requests_total{{result="{result}"}} {n}'
                 for result, n in sorted(self.requests.items())], openmetrics)
        self_metric_family(out, "spec_cache_entries", "gauge",
                "Container identities cached from cAdvisor specs, deleted ones within retention included.",
                [f"cadvisor_events_spec_cache_entries {self.entries}"], openmetrics)
        self_metric_family(out, "spec_cache_evicted", "counter",
                "Cached container identities dropped, by reason (retention, max_per_host, max_total).",
                [f'cadvisor_events_spec_cache_evicted_total{{reason="{reason}"}} {n}'
                 for reason, n in sorted(self.evicted.items())], openmetrics)

    # -- shared bounds ------------------------------------------------------------------------

    def _count_request(self, result: str) -> None:
        self.requests[result] = self.requests.get(result, 0) + 1

    def _wait_for_slot(self, specs: HostSpecs) -> None:
        if self.active >= self.concurrency:
            self._waiting[specs] = None

    def _forget_waiting(self, specs: HostSpecs) -> None:
        self._waiting.pop(specs, None)

    def _slot_freed(self) -> None:
        while self._waiting and self.active < self.concurrency:
            specs = next(iter(self._waiting))
            del self._waiting[specs]
            specs._pump()

    def _enforce_bounds(self, specs: HostSpecs) -> None:
        while len(specs._entries) > self.max_per_host:
            specs._evict_one("max_per_host")
        while self.entries > self.max_total:
            if not self._evict_oldest_deleted() and not specs._evict_one("max_total"):
                break

    def _compact_deletions(self) -> None:
        """Keep only the records that still decide an expiry (one per deleted cgroup)."""
        self._deletions = collections.deque(
            record for record in self._deletions if record[1]._recorded.get(record[2]) == record[0])

    def _evict_oldest_deleted(self) -> bool:
        while self._deletions:
            deadline, specs, cgroup = self._deletions.popleft()
            if specs._recorded.get(cgroup) == deadline and self._hosts.get(specs.target.name) is specs:
                del specs._recorded[cgroup]
                if cgroup in specs._deleted:
                    specs._drop(cgroup, "max_total")
                    return True
        return False
