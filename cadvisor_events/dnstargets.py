"""DNS discovery: targets from A/AAAA or SRV records, looked up again on a timer.

Each ``--target-dns`` name is looked up with Twisted's own resolver
(``twisted.names``, through :mod:`cadvisor_events.dnsclient`) every
``--dns-refresh`` seconds. Every address of the
name becomes a target ``ADDR:PORT``; a name of the form
``_service._proto.domain`` is an SRV name, and every SRV record gives a host
name and a port, whose addresses become targets. The union over all names is
handed to :class:`~cadvisor_events.targets.TargetsWatcher` as one source, so
DNS targets are merged with ``--target`` and file_sd ones and started and
stopped exactly as a changed targets file's are.

It must never drop a name's last good set because a lookup failed (timeout,
SERVFAIL, refused: the DNS server's trouble is not the fleet's), never run
two refreshes at once, never ask any resolver but the one it is given (so
``--dns-server`` means what it says, for SRV host names too), and never
start, stop or know about followers.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Optional, Sequence, Set, Tuple
from urllib.parse import urlsplit

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet import error as internet_error
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.python.failure import Failure

from .cadvisor import Target, TargetError, parse_target
from .targets import TargetSpec

log = Logger()

DEFAULT_REFRESH = 30.0
#: DNS queries in flight at once: an SRV name of a large DaemonSet asks two
#: queries per pod. (The resolver must answer later, as a network client does:
#: a DeferredSemaphore fed thousands of answers already there recurses that deep.)
QUERIES_IN_FLIGHT = 64
#: ``cadvisor_events_dns_lookups_total{result}`` values; all start at 0.
RESULTS = ("success", "nxdomain", "timeout", "servfail", "refused", "error")
#: Results that say what the name holds now (nothing, for NXDOMAIN): they replace
#: the name's targets (emptying them once confirmed). Any other result keeps its last good set.
AUTHORITATIVE_RESULTS = frozenset({"success", "nxdomain"})


@attrs.frozen
class DnsName:
    """One ``--target-dns`` value: a name to look up and how to reach what it finds.

    ``port`` is ``None`` for an SRV name: its records carry the ports.
    Scheme and credentials (``https://user:pass@NAME``) apply to every target
    found; the password is kept out of ``repr``.
    """

    name: str
    port: Optional[int]
    scheme: str = "http"
    username: Optional[str] = attrs.field(default=None, repr=False)
    password: Optional[str] = attrs.field(default=None, repr=False)

    @property
    def is_srv(self) -> bool:
        return self.port is None

    def spec(self, address: str, port: int) -> TargetSpec:
        """The target for one address found (no extra labels: see README's *DNS discovery*)."""
        return TargetSpec(target=Target(host=address, port=port, scheme=self.scheme,
                                        username=self.username, password=self.password))


def is_srv_name(name: str) -> bool:
    """``_service._proto.domain``: the first two labels start with an underscore."""
    labels = name.split(".")
    return len(labels) >= 3 and labels[0].startswith("_") and labels[1].startswith("_")


def parse_dns_name(text: str) -> DnsName:
    """Parse ``NAME[:PORT]`` or ``http(s)://[user:pass@]NAME[:PORT]`` (port 8080 unless given).

    An SRV name (``_cadvisor._tcp.example.com``) takes no port. A trailing dot
    is allowed: every name is looked up as written, fully qualified.

    :raises ValueError: with a message a person can act on.
    """
    try:
        target = parse_target(text)
    except TargetError as e:
        raise ValueError(str(e)) from None
    name = target.host.rstrip(".").lower()
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ValueError(f"{name} is an address, not a DNS name (give it with --target)")
    labels = name.split(".")
    if len(name) > 253 or not all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum() for label in labels
    ):
        raise ValueError(f"{name!r} is not a DNS name")
    stripped = text.strip()
    explicit_port = urlsplit(stripped if "://" in stripped else "http://" + stripped).port is not None
    if is_srv_name(name):
        if explicit_port:
            raise ValueError(f"{name} is an SRV name: its records give the ports, leave out :PORT")
        port: Optional[int] = None
    else:
        port = target.port
    return DnsName(name=name, port=port, scheme=target.scheme,
                   username=target.username, password=target.password)


class LookupFailed(Exception):
    """A name could not be resolved; ``result`` is its ``dns_lookups_total`` label value."""

    def __init__(self, result: str, why: str) -> None:
        super().__init__(why)
        self.result = result


def classify(failure: Failure) -> str:
    """The ``result`` label of a failed query."""
    if failure.check(error.DNSNameError):
        return "nxdomain"
    if failure.check(defer.TimeoutError, internet_error.TimeoutError):  # DNSQueryTimeoutError included
        return "timeout"
    if failure.check(error.DNSServerError):
        return "servfail"
    if failure.check(error.DNSQueryRefusedError):
        return "refused"
    return "error"


def describe(failure: Failure) -> str:
    """A short reason for the log (Twisted's DNS errors print a whole message otherwise)."""
    names = {"nxdomain": "no such name (NXDOMAIN)", "timeout": "no answer in time",
             "servfail": "server failure (SERVFAIL)", "refused": "refused (REFUSED)"}
    return names.get(classify(failure)) or f"{failure.type.__name__}: {failure.getErrorMessage()}"


def _addresses(records: Iterable[dns.RRHeader]) -> List[str]:
    """The addresses of the A and AAAA records among ``records`` (CNAMEs on the way skipped)."""
    return [str(ipaddress.ip_address(record.payload.address))  # type: ignore[union-attr]
            for record in records if record.type in (dns.A, dns.AAAA)]


def _address_order(address: str) -> Tuple[int, int]:
    """Sort key of an address: IPv4 before IPv6, then numerically (10.0.0.2 before 10.0.0.10)."""
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


class DnsTargets(service.Service):
    """The targets behind the ``--target-dns`` names, looked up every ``refresh`` seconds.

    Each refresh looks every name up once, the names concurrently, and calls
    ``on_change`` with the union of their targets (in the order of ``names``,
    each name's sorted by address) when it differs from the last call. A
    name whose lookup succeeds gets the set found; any other outcome but
    NXDOMAIN keeps its last good set. An answer with no address (NXDOMAIN,
    as for a headless Service with no ready pod, or no records) empties a
    name only when the next lookup agrees: a spurious one (seen from
    CoreDNS under load) would otherwise stop every follower of the name
    and make each re-read its host's history a refresh later, where
    following a gone address one refresh longer costs a retry. One
    ``LoopingCall`` on the injected clock runs the refreshes, and it waits
    for one to finish before it schedules the next, so they never overlap.

    ``lookups`` counts refreshes by ``(name, result)``; ``found`` holds each
    name's current targets. Both feed :class:`DnsMetrics`.
    """

    def __init__(
        self,
        names: Sequence[DnsName],
        resolver,
        on_change: Callable[[List[TargetSpec]], None],
        clock,
        refresh: float = DEFAULT_REFRESH,
    ) -> None:
        self.names = list(names)
        self.resolver = resolver
        self.on_change = on_change
        self.clock = clock
        self.refresh_interval = refresh
        self.found: Dict[str, List[TargetSpec]] = {}
        self.lookups: Dict[Tuple[str, str], int] = {
            (dns_name.name, result): 0 for dns_name in self.names for result in RESULTS
        }
        self.last_result: Dict[str, str] = {}
        #: Names whose targets one empty answer would have removed: the next must agree.
        self._empty_once: Set[str] = set()
        self._reported: List[TargetSpec] = []
        self._queries = defer.DeferredSemaphore(QUERIES_IN_FLIGHT)
        self._loop: Optional[task.LoopingCall] = None
        self._refreshing: Optional[defer.Deferred] = None

    @property
    def specs(self) -> List[TargetSpec]:
        """Every name's targets now, in the order of the names; an address found twice once."""
        seen: Dict[str, TargetSpec] = {}
        for dns_name in self.names:
            for spec in self.found.get(dns_name.name, ()):
                seen.setdefault(spec.name, spec)
        return list(seen.values())

    def not_ready(self) -> Optional[str]:
        """Why /-/ready must wait: names never looked up yet (whatever the outcome), else None."""
        waiting = [n.name for n in self.names if n.name not in self.last_result]
        return f"DNS name(s) not looked up yet: {', '.join(waiting)}" if waiting else None

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = self.clock
        self._loop.start(self.refresh_interval, now=True)

    def stopService(self) -> None:
        """Stop refreshing; a refresh still waiting for answers changes nothing when they come."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._close_connection()

    def _close_connection(self) -> None:
        """End the resolver's connection between refreshes (see :class:`TcpResolver`)."""
        close = getattr(self.resolver, "close", None)
        if close is not None:
            close()

    def refresh(self) -> defer.Deferred:
        """Look every name up now; fires (never fails) once every result is applied.

        While a refresh runs, another call waits for that one instead of starting a second.
        """
        running = self._refreshing
        if running is None:
            running = self._refreshing = self._refresh()

            def done(result: object) -> None:
                self._refreshing = None
                self._close_connection()
                if isinstance(result, Failure):  # a bug: log it, keep the loop alive
                    log.failure("DNS refresh failed", result)

            running.addBoth(done)
        waiter: defer.Deferred = defer.Deferred()
        running.addBoth(lambda _: waiter.callback(None))
        return waiter

    @defer.inlineCallbacks
    def _refresh(self) -> Generator[Any, Any, None]:
        results = yield defer.DeferredList([self._lookup(n) for n in self.names], consumeErrors=True)
        if not self.running:
            return
        for dns_name, (ok, outcome) in zip(self.names, results):
            if ok:
                self._apply(dns_name, "success", outcome, None)
            elif outcome.check(LookupFailed):
                self._apply(dns_name, outcome.value.result, None, str(outcome.value))
            else:
                self._apply(dns_name, classify(outcome), None, describe(outcome))
        specs = self.specs
        if specs != self._reported:
            self._reported = specs
            self.on_change(specs)

    @defer.inlineCallbacks
    def _lookup(self, dns_name: DnsName) -> Generator[Any, Any, List[TargetSpec]]:
        """The targets of one name, sorted; a failure is a :class:`LookupFailed`."""
        if dns_name.port is not None:
            addresses = yield self._name_addresses(dns_name.name)
            return [dns_name.spec(address, dns_name.port) for address in sorted(addresses, key=_address_order)]
        answers, _, _ = yield self._query(self.resolver.lookupService, dns_name.name)
        services = {(record.payload.target.name.decode("ascii").rstrip(".").lower(), record.payload.port)
                    for record in answers if record.type == dns.SRV}
        hosts = sorted({host for host, _ in services if host})  # "." means "no such service"
        per_host = yield defer.gatherResults([self._host_addresses(host) for host in hosts],
                                             consumeErrors=True).addErrback(lambda f: f.value.subFailure)
        addresses = dict(zip(hosts, per_host))
        return sorted(
            {dns_name.spec(address, port) for host, port in services for address in addresses.get(host, ())},
            key=lambda spec: (_address_order(spec.target.host), spec.target.port),
        )

    @defer.inlineCallbacks
    def _name_addresses(self, name: str) -> Generator[Any, Any, Set[str]]:
        """Every A and AAAA address of ``name``; NXDOMAIN of both is ``LookupFailed("nxdomain")``."""
        outcomes = yield defer.DeferredList(
            [self._query(self.resolver.lookupAddress, name),
             self._query(self.resolver.lookupIPV6Address, name)],
            consumeErrors=True,
        )
        failures = [outcome.value for ok, outcome in outcomes if not ok]
        for failure in failures:
            if failure.result != "nxdomain":
                raise failure
        if len(failures) == len(outcomes):
            raise failures[0]
        return {address for ok, outcome in outcomes if ok for address in _addresses(outcome[0])}

    def _host_addresses(self, host: str) -> defer.Deferred:
        """The addresses of an SRV record's host; none if it does not exist (a pod just gone)."""

        def none_if_gone(failure: Failure) -> object:
            if failure.check(LookupFailed) and failure.value.result == "nxdomain":
                return set()
            return failure

        return self._name_addresses(host).addErrback(none_if_gone)

    def _query(self, lookup: Callable[[str], defer.Deferred], name: str) -> defer.Deferred:
        """One query, at most :data:`QUERIES_IN_FLIGHT` at once; a failure becomes :class:`LookupFailed`."""

        def failed(failure: Failure) -> Failure:
            return Failure(LookupFailed(classify(failure), f"{name}: {describe(failure)}"))

        return self._queries.run(lookup, name).addErrback(failed)

    def _apply(self, dns_name: DnsName, result: str, specs: Optional[List[TargetSpec]],
               why: Optional[str]) -> None:
        """Count one lookup of ``dns_name`` and keep what it found (or, on failure, what it had)."""
        name = dns_name.name
        self.lookups[(name, result)] = self.lookups.get((name, result), 0) + 1
        previous_result = self.last_result.get(name)
        self.last_result[name] = result
        if result not in AUTHORITATIVE_RESULTS:
            if result != previous_result:
                log.warn("DNS lookup of {name} failed ({why}); keeping its last {count} target(s)",
                         name=name, why=why, count=len(self.found.get(name, ())))
            return
        new = specs or []
        old = self.found.get(name)
        if not new and old and name not in self._empty_once:
            self._empty_once.add(name)
            log.warn("DNS name {name} answered no address ({result}); keeping its {count} target(s) "
                     "unless the next lookup says so too", name=name, result=result, count=len(old))
            return
        self._empty_once.discard(name)
        self.found[name] = new
        if result == "nxdomain" and previous_result != "nxdomain":
            log.warn("DNS name {name} does not exist (NXDOMAIN; names are looked up as written, without "
                     "resolv.conf's search domains)", name=name)
        if old != new and (old or new):
            before = {spec.name for spec in old or ()}
            after = {spec.name for spec in new}
            log.info("DNS name {name}: {count} target(s), {added} added, {removed} removed",
                     name=name, count=len(new), added=len(after - before), removed=len(before - after))


class DnsMetrics(Collector):
    """``cadvisor_events_dns_lookups_total{name,result}`` and ``cadvisor_events_dns_targets{name}``."""

    def __init__(self, source: DnsTargets) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "cadvisor_events_dns_lookups",
            "Lookups of each --target-dns name, by result (success, nxdomain, timeout, servfail, "
            "refused, error); on any but success and nxdomain the name keeps its last targets.",
            labels=["name", "result"],
        )
        for (name, result), count in sorted(self.source.lookups.items()):
            lookups.add_metric([name, result], count)
        yield lookups
        targets = GaugeMetricFamily(
            "cadvisor_events_dns_targets",
            "Targets each --target-dns name resolves to now (all shards).",
            labels=["name"],
        )
        for dns_name in self.source.names:
            targets.add_metric([dns_name.name], len(self.source.found.get(dns_name.name, ())))
        yield targets
