"""``twistd cadvisor-events``: command-line options and the service they make.

:class:`Options` parses and validates (a bad value is a ``UsageError`` with a
readable message, before anything starts); :func:`makeService` only wires
objects together, top to bottom, with the reactor as a parameter so tests can
pass their own. No logic of its own lives here.
"""

from __future__ import annotations

import os
import resource as rlimit
from functools import partial
from typing import List, Optional, cast

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from twisted.application import internet, service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from .access import parse_allow
from .auth import AuthFileError, PasswordFileChecker, load_auth_file
from .cadvisor import CAdvisorClient, TargetError, parse_target
from .clienttls import client_tls_policy
from .counters import EventCounters
from .dnsclient import parse_dns_server
from .dnstargets import parse_dns_name
from .options import byte_size, seconds, server_endpoint, whole_number
from .backfills import BackfillQueue
from .gate import ConnectGate
from .httpclients import stream_http_client
from .streamclient import StreamClient
from .sharding import choose_shard, current_hostname
from .targets import TargetSpec, TargetsWatcher, install_sighup

log = Logger()

DEFAULT_LISTEN = "tcp:8888"
DEFAULT_TARGET = "127.0.0.1:8080"
ENV_PREFIX = "CADVISOR_EVENTS_"
#: cAdvisor requests (streams, histories) being set up at once, fleet-wide.
CONNECTS_IN_FLIGHT = 256


class Options(usage.Options):
    """Options of ``twistd cadvisor-events``; each also read from ``CADVISOR_EVENTS_<NAME>``."""

    synopsis = "[options]"
    longdesc = (
        "Follow cAdvisors' container event streams (OOM, OOM kill, creation, deletion) and serve "
        "them as Prometheus counters on /metrics; /proxy/<host:port> answers like "
        "tsuru/cadvisor-events-exporter. Every option can also be set with an environment "
        "variable CADVISOR_EVENTS_<OPTION> (upper case, dashes as underscores; repeatable "
        "options separated by commas)."
    )
    optFlags = [
        ["oom-only", None, "Only oom and oomKill events (the Go seed's -oom-only)."],
        ["demo", None, "Start the built-in cAdvisor simulator in-process and follow it."],
        ["no-history-seed", None,
         "On the first connect to a host, do not count the events already in its history "
         "(start its counters at zero)."],
        ["no-proxy", None, "Do not serve /proxy at all (404 like any unknown path)."],
        ["insecure-skip-verify", None,
         "Do not verify the certificates of https targets and /proxy upstreams (logs a warning)."],
        ["access-log", None, "Log one line per HTTP request (credentials redacted); off by default."],
        ["no-enrich", None,
         "Do not ask cAdvisors for container specs: no namespace/pod/container/image/name labels."],
    ]
    optParameters = [
        ["targets-file", None, None,
         "Prometheus file_sd JSON (or YAML) listing targets; re-read on change and on SIGHUP."],
        ["series-ttl", None, 3600.0,
         "Forget a container's series this many seconds after its deletion event (0 = never).",
         seconds("series-ttl")],
        ["max-series", None, 1_000_000,
         "Hard cap on event series; beyond it the least recently updated are evicted.",
         whole_number("max-series")],
        ["shard", None, None,
         "Follow only targets whose stable hash mod N is I (I/N), for N replicas [default: 0/1]; "
         "auto: I from this StatefulSet pod's ordinal (host name NAME-I), N from --shards."],
        ["shards", None, None,
         "Number of replicas N for --shard auto (the StatefulSet's replicas).", whole_number("shards")],
        ["dns-refresh", None, 30.0,
         "Seconds between lookups of the --target-dns names.", seconds("dns-refresh")],
        ["proxy-default", None, "127.0.0.1:9094", "Upstream of a bare /proxy (the Go seed's default)."],
        ["upstream-timeout", None, 30.0,
         "Seconds a /proxy upstream has to answer completely (the Go seed's 30 s).",
         seconds("upstream-timeout")],
        ["connect-timeout", None, 30.0,
         "Seconds a followed cAdvisor has to accept and send stream headers.",
         seconds("connect-timeout")],
        ["max-clock-skew", None, 300.0,
         "Seconds an event's timestamp may lie ahead of this host's clock and still be the point "
         "a backfill resumes from (0 = trust every timestamp).",
         seconds("max-clock-skew")],
        ["backfill-overlap", None, 1.0,
         "Seconds before the newest counted event that a backfill after a break re-reads, for "
         "events cAdvisor dates early (OOMs up to a second); they are de-duplicated.",
         seconds("backfill-overlap")],
        ["proxy-concurrency", None, 4,
         "Concurrent /proxy fetches; beyond, 503 with Retry-After: 1.",
         whole_number("proxy-concurrency")],
        ["web-max-requests", None, 40,
         "/metrics answers in flight at most (0 = no limit); beyond, 503 with Retry-After: 1."],
        ["max-history-bytes", None, "256MiB",
         "Largest history body accepted from a cAdvisor (/proxy answers 502 beyond; followers retry)."],
        ["ca-file", None, None,
         "PEM bundle of CA certificates trusted (instead of the system's) for https targets and "
         "/proxy upstreams."],
        ["auth-file", None, None,
         "File of user:hash lines: HTTP basic auth on every path but /-/healthy "
         "(make a line with: python -m cadvisor_events.auth USER)."],
        ["web-config-file", None, None,
         "exporter-toolkit's web config YAML (TLS on every --listen endpoint, client certificates, "
         "basic_auth_users, headers); re-read when it or a file it names changes."],
    ]

    #: This host's name, read by --shard auto (tests set their own).
    hostname = staticmethod(current_hostname)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["target"] = []
        self["proxy-allow"] = []
        self["target-dns"] = []
        self["dns-server"] = []
        self["container-label"] = []
        self._apply_environment()

    def _apply_environment(self) -> None:
        """Defaults from CADVISOR_EVENTS_* variables; the command line still wins."""
        env = os.environ
        for name in ("listen", "target", "proxy-allow", "target-dns", "dns-server", "container-label"):
            value = env.get(ENV_PREFIX + name.upper().replace("-", "_"))
            if value:
                self._env_repeatable = getattr(self, "_env_repeatable", {})
                self._env_repeatable[name] = [v.strip() for v in value.split(",") if v.strip()]
        for parameter in cast(List[list], self.optParameters):
            long_name = parameter[0]
            value = env.get(ENV_PREFIX + long_name.upper().replace("-", "_"))
            if value is not None:
                self.opts[long_name] = value
                self.defaults[long_name] = value
        for flag in cast(List[list], self.optFlags):
            long_name = flag[0]
            value = env.get(ENV_PREFIX + long_name.upper().replace("-", "_"), "")
            if value.lower() in ("1", "true", "yes", "on"):
                self.opts[long_name] = 1

    def opt_listen(self, endpoint: str) -> None:
        """Where to serve HTTP: PORT, :PORT, IP:PORT, [IPv6]:PORT (all TCP) or a Twisted server
        endpoint string such as ssl:9100:privateKey=key.pem (repeatable) [default: tcp:8888]."""
        self["listen"].append(self._coerce_value(endpoint, server_endpoint("listen")))

    def opt_target(self, target: str) -> None:
        """A cAdvisor to follow: HOST[:PORT] or http(s)://[user:pass@]HOST[:PORT] (repeatable)."""
        try:
            self["target"].append(parse_target(target))
        except TargetError as e:
            raise usage.UsageError(f"--target {target!r}: {e}")

    def opt_proxy_allow(self, allowed: str) -> None:
        """A CIDR, address or exact host name /proxy may fetch from (repeatable) [default: any]."""
        self["proxy-allow"].append(allowed)

    def opt_target_dns(self, name: str) -> None:
        """Follow every address of this DNS name: NAME[:PORT] (A/AAAA; port 8080 unless given) or
        _service._proto.NAME (SRV: host names and ports), looked up every --dns-refresh (repeatable)."""
        try:
            dns_name = parse_dns_name(name)
        except ValueError as e:
            raise usage.UsageError(f"--target-dns {name!r}: {e}")
        if any(known.name == dns_name.name for known in self["target-dns"]):
            raise usage.UsageError(f"--target-dns {dns_name.name} is given twice")
        self["target-dns"].append(dns_name)

    def opt_dns_server(self, server: str) -> None:
        """DNS server --target-dns asks over TCP: ADDRESS[:PORT] or [IPv6]:PORT, port 53 unless given
        (repeatable: one per refresh, in turn) [default: the nameservers of /etc/resolv.conf]."""
        try:
            self["dns-server"].append(parse_dns_server(server))
        except ValueError as e:
            raise usage.UsageError(f"--dns-server {server!r}: {e}")

    def opt_container_label(self, key: str) -> None:
        """Also copy this container label of the spec as container_label_<KEY sanitised> onto the
        event series (repeatable)."""
        if not key.strip():
            raise usage.UsageError("--container-label needs a label key, e.g. app.kubernetes.io/name")
        if key not in self["container-label"]:
            self["container-label"].append(key)

    def opt_version(self) -> None:
        """Print the exporter's version (with Twisted's and Python's) and exit."""
        from . import build_info  # twistd's own --version, before the plugin name, prints Twisted's

        print(build_info().describe())
        raise SystemExit(0)

    def postOptions(self) -> None:
        env = getattr(self, "_env_repeatable", {})
        if not self["listen"]:
            self["listen"] = [self._coerce_value(value, server_endpoint("listen"))
                              for value in env.get("listen", [])] or [DEFAULT_LISTEN]
        if not self["target"] and env.get("target"):
            for value in env["target"]:
                self.opt_target(value)
        for name in ("series-ttl", "upstream-timeout", "connect-timeout", "max-clock-skew", "backfill-overlap"):
            self[name] = self._coerce(name, seconds(name))
        for name in ("max-series", "proxy-concurrency"):
            self[name] = self._coerce(name, whole_number(name))
        self["web-max-requests"] = self._coerce("web-max-requests", whole_number("web-max-requests", minimum=0))
        self["max-history-bytes"] = self._coerce("max-history-bytes", byte_size("max-history-bytes"))
        self._security_options(env)
        self._dns_options(env)
        if not self["container-label"]:
            for value in env.get("container-label", []):
                self.opt_container_label(value)
        self["shards"] = self._coerce("shards", whole_number("shards"))
        self["shard"] = self._coerce_value(self["shard"], partial(choose_shard, shards=self["shards"],
                                                                  hostname=self.hostname))
        try:
            self["proxy-default"] = parse_target(str(self["proxy-default"]), default_port=9094)
        except TargetError as e:
            raise usage.UsageError(f"--proxy-default: {e}")
        if self["targets-file"] and not os.path.exists(self["targets-file"]):
            log.warn("targets file {path} does not exist (yet); waiting for it",
                     path=self["targets-file"])

    def _dns_options(self, env) -> None:
        """--target-dns and --dns-server from the environment unless given; --dns-refresh above 0."""
        if not self["target-dns"]:
            for value in env.get("target-dns", []):
                self.opt_target_dns(value)
        if not self["dns-server"]:
            for value in env.get("dns-server", []):
                self.opt_dns_server(value)
        self["dns-refresh"] = self._coerce("dns-refresh", seconds("dns-refresh"))
        if self["dns-refresh"] <= 0:
            raise usage.UsageError("--dns-refresh must be more than 0 seconds")

    def _security_options(self, env) -> None:
        """Parse --proxy-allow, the TLS options and the auth file (each a UsageError when bad)."""
        try:
            self["proxy-allow"] = parse_allow(self["proxy-allow"] or env.get("proxy-allow") or [])
        except ValueError as e:
            raise usage.UsageError(str(e))
        if self["insecure-skip-verify"] and self["ca-file"]:
            raise usage.UsageError("--insecure-skip-verify verifies nothing: leave out --ca-file, or it")
        try:
            self["tls-policy"] = client_tls_policy(self["ca-file"], bool(self["insecure-skip-verify"]))
        except ValueError as e:
            raise usage.UsageError(f"--ca-file: {e}")
        self["auth-users"] = None
        if self["auth-file"]:
            try:
                self["auth-users"] = load_auth_file(self["auth-file"])
            except AuthFileError as e:
                raise usage.UsageError(f"--auth-file: {e}")
        self["web-config"] = self._web_config() if self["web-config-file"] else None

    def _web_config(self):
        """--web-config-file read and checked whole (certificates too); not with --auth-file or ssl:."""
        from .webconfig import WebConfigError, load_web_serving

        if self["auth-file"]:
            raise usage.UsageError("--web-config-file and --auth-file both set basic auth: put the users "
                                   "in the web config's basic_auth_users (bcrypt) and drop --auth-file")
        try:
            serving = load_web_serving(self["web-config-file"])
        except WebConfigError as e:
            raise usage.UsageError(f"--web-config-file {self['web-config-file']}: {e}")
        ssl = [d for d in self["listen"] if d.split(":", 1)[0].lower() == "ssl"]
        if serving.tls is not None and ssl:
            raise usage.UsageError(f"--listen {ssl[0]}: the web config file's tls_server_config already "
                                   "serves TLS on every endpoint: listen with tcp: (or PORT) instead")
        return serving

    def _coerce(self, name: str, coerce):
        value = self[name]
        return self._coerce_value(value, coerce) if isinstance(value, str) else value

    @staticmethod
    def _coerce_value(value: str, coerce):
        try:
            return coerce(value)
        except ValueError as e:
            raise usage.UsageError(str(e))


def raise_open_files_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit: every stream holds a descriptor."""
    try:
        soft, hard = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
        if hard == rlimit.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            rlimit.setrlimit(rlimit.RLIMIT_NOFILE, (hard, hard))
            log.info("raised open files limit from {soft} to {hard}", soft=soft, hard=hard)
    except (ValueError, OSError) as e:
        log.warn("could not raise the open files limit: {e}", e=e)


def static_specs(config: Options) -> List[TargetSpec]:
    targets = list(config["target"])
    if not targets and not config["targets-file"] and not config["demo"] and not config["target-dns"]:
        targets = [parse_target(DEFAULT_TARGET)]
    return [TargetSpec(target=t, labels=()) for t in targets]


def makeService(config: Options, reactor=None) -> service.MultiService:
    """Wire the exporter: counters, followers, targets, web endpoints."""
    if reactor is None:
        from twisted.internet import reactor
    from .activity import SAMPLE_SECONDS, Activity
    from .fleet import FleetService
    from .follower import Follower
    from .selfmetrics import FleetMetrics
    from .web import build_root, build_site

    raise_open_files_limit()
    top = service.MultiService()

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)

    counters = EventCounters(
        reactor, series_ttl=config["series-ttl"], max_series=config["max-series"]
    )

    tls_policy = config["tls-policy"]
    if config["insecure-skip-verify"]:
        log.warn("--insecure-skip-verify: certificates of https targets and /proxy upstreams are "
                 "NOT verified; anyone on the path can read the traffic and credentials")
    stream_client = CAdvisorClient(reactor, http=stream_http_client(reactor, tls_policy=tls_policy),
                                   streams=StreamClient(reactor, tls_policy=tls_policy))
    connect_gate = ConnectGate(CONNECTS_IN_FLIGHT)
    backfills = BackfillQueue(reactor)
    enrichment = make_enrichment(config, reactor, counters, stream_client)
    internet.TimerService(60, enrichment.expire).setServiceParent(top)
    activity = Activity(counters.counted, reactor)  # the status page's charts, sampled on a timer
    internet.TimerService(SAMPLE_SECONDS, activity.sample).setServiceParent(top)

    def make_follower(spec: TargetSpec, first_delay: float) -> service.IService:
        enricher = enrichment.host(spec)
        return Follower(
            spec.target,
            client=stream_client,
            counters=enricher,
            specs=enricher,
            clock=reactor,
            oom_only=bool(config["oom-only"]),
            seed_history=not config["no-history-seed"],
            connect_timeout=config["connect-timeout"],
            max_history_bytes=config["max-history-bytes"],
            first_delay=first_delay,
            connect_gate=connect_gate,
            backfills=backfills,
            max_clock_skew=config["max-clock-skew"] or None,
            backfill_overlap=config["backfill-overlap"],
        )

    fleet = FleetService(
        make_follower,
        shard=config["shard"],
        clock=reactor,
        on_removed=lambda spec: enrichment.remove_host(spec.target.name),
    )
    fleet.setServiceParent(top)

    watcher = TargetsWatcher(
        static_specs(config), config["targets-file"], fleet.set_targets, clock=reactor
    )
    WatcherService(watcher).setServiceParent(top)
    if config["targets-file"]:
        install_sighup(reactor, watcher)
    readiness = []
    if config["target-dns"]:
        dns_targets = add_dns_discovery(config, reactor, watcher, registry)
        dns_targets.setServiceParent(top)
        readiness.append(dns_targets)

    if config["demo"]:
        from .demo import DemoService

        DemoService(watcher, reactor=reactor).setServiceParent(top)

    proxy = None if config["no-proxy"] else make_proxy(config, reactor, registry, tls_policy)
    web_config = None
    if config["web-config"] is not None:
        from .webconfig import WebConfigWatcher, describe

        web_config = WebConfigWatcher(config["web-config-file"], config["web-config"], clock=reactor)
        log.info("web config {path}: {what}", path=config["web-config-file"],
                 what=describe(config["web-config"].config))
    fleet_metrics = FleetMetrics(fleet, counters, watcher if config["targets-file"] else None,
                                 web_config=web_config)
    root = build_root(
        registry=registry, counters=counters, fleet_metrics=fleet_metrics, fleet=fleet, proxy=proxy,
        max_requests=config["web-max-requests"], clock=reactor, oom_kills=enrichment.kills,
        readiness=readiness, activity=activity,
    )
    checker = PasswordFileChecker(config["auth-users"]) if config["auth-users"] else None
    site = build_site(root, checker=checker, access_log=bool(config["access-log"]), web_config=web_config)
    for description in config["listen"]:
        if web_config is not None:
            web_config.listening_service(reactor, description, site).setServiceParent(top)
        else:
            strports.service(description, site, reactor=reactor).setServiceParent(top)
    return top


def add_dns_discovery(config: Options, reactor, watcher: TargetsWatcher, registry):
    """``--target-dns``: the names looked up on a timer, their targets a source of ``watcher``."""
    from .dnsclient import make_resolver
    from .dnstargets import DnsMetrics, DnsTargets

    dns_targets = DnsTargets(
        config["target-dns"],
        make_resolver(config["dns-server"], reactor),
        partial(watcher.set_source, "dns"),
        clock=reactor,
        refresh=config["dns-refresh"],
    )
    registry.register(DnsMetrics(dns_targets))
    return dns_targets


def make_enrichment(config: Options, reactor, counters: EventCounters, client: CAdvisorClient):
    """Who counted events belong to: the OOM kill families and, unless ``--no-enrich``, the
    spec store (its listings go through the followers' connect gate, not one of its own)."""
    from .enrich import Enrichment
    from .oomkills import OomKills
    from .specs import SpecStore

    kills = OomKills(reactor, series_ttl=config["series-ttl"])
    specs = None if config["no-enrich"] else SpecStore(
        client, reactor, container_labels=config["container-label"], retention=config["series-ttl"])
    return Enrichment(counters, kills, specs, reactor)


def make_proxy(config: Options, reactor, registry, tls_policy):
    """``/proxy``: its upstream client, the ``--proxy-allow`` check and its limits."""
    from .access import ProxyAccess, resolver
    from .httpclients import pinned_http_client, proxy_http_client
    from .proxy import ProxyResource

    allow = config["proxy-allow"]
    if allow.open:
        log.warn("/proxy is open: it fetches from any host and port this process can reach; "
                 "restrict it with --proxy-allow or remove it with --no-proxy")
        access = None
    else:
        log.info("/proxy fetches only from: {allowed}", allowed=allow.describe())
        access = ProxyAccess(
            allow,
            resolve=resolver(reactor),
            pinned_client=lambda addresses: CAdvisorClient(
                reactor, http=pinned_http_client(reactor, tls_policy, addresses)),
        )
    return ProxyResource(
        CAdvisorClient(reactor, http=proxy_http_client(reactor, tls_policy)),
        default_target=config["proxy-default"],
        oom_only=bool(config["oom-only"]),
        timeout=config["upstream-timeout"],
        clock=reactor,
        registry=registry,
        access=access,
        concurrency=config["proxy-concurrency"],
        max_history_bytes=config["max-history-bytes"],
    )


class WatcherService(service.Service):
    """Runs a :class:`TargetsWatcher` for as long as the service runs."""

    def __init__(self, watcher: TargetsWatcher) -> None:
        self.watcher = watcher

    def startService(self) -> None:
        super().startService()
        self.watcher.start()

    def stopService(self) -> Optional[defer.Deferred]:
        super().stopService()
        self.watcher.stop()
        return None
