"""Which cAdvisors to follow: static targets, Prometheus file_sd files, reloads, shards.

This module turns ``--target`` values and a file_sd file into the desired set
of :class:`TargetSpec` values, re-reads the file when it changes (polling its
stat with the injected clock) or on SIGHUP, and tells one callback the full
new set. It must never start, stop or know about followers (that is
``fleet.py``), never drop the last good set because a file is broken,
missing or half-written, and never put a target's credentials in a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import attrs
from twisted.internet import task
from twisted.logger import Logger

from .cadvisor import Target, TargetError, parse_target
from .counters import RESERVED_LABELS

try:  # PyYAML is optional: YAML files work only where it is installed.
    import yaml
except ImportError:  # pragma: no cover - depends on the environment
    yaml = None  # type: ignore[assignment]

log = Logger()

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: Labels this exporter sets itself; a file_sd label of the same name would clash.
#: A targets file larger than this is refused rather than parsed in the reactor thread.
MAX_FILE_BYTES = 64 * 1024 * 1024
YAML_SUFFIXES = (".yml", ".yaml")
GROUP_KEYS = frozenset({"targets", "labels"})
#: The file_sd label Prometheus scrapes a group's targets with (``http`` or ``https``).
SCHEME_LABEL = "__scheme__"
SCHEMES = ("http", "https")

Labels = tuple[tuple[str, str], ...]


def _sorted_labels(labels: Union[Mapping[str, str], Iterable[tuple[str, str]]]) -> Labels:
    """Labels as a sorted tuple of pairs, so equal label sets compare and hash equal."""
    if isinstance(labels, Mapping):
        labels = labels.items()
    return tuple(sorted((str(k), str(v)) for k, v in labels))


@attrs.frozen
class TargetSpec:
    """One target to follow and the extra labels its series carry.

    Two specs are equal only if target (credentials included) and labels are:
    a change of either means the follower has to be replaced.
    """

    target: Target
    labels: Labels = attrs.field(default=(), converter=_sorted_labels)

    @property
    def name(self) -> str:
        """The target's ``host:port``: the key a host is followed under."""
        return self.target.name


class TargetsFileError(ValueError):
    """A targets file that cannot be used; the message names the file and the problem."""


def parse_file_sd(data: bytes, source: str) -> list[TargetSpec]:
    """Parse a Prometheus file_sd document: ``[{"targets": [...], "labels": {...}}, ...]``.

    JSON always; YAML when ``source`` ends in ``.yml``/``.yaml`` and PyYAML is
    importable. Label names must match ``[a-zA-Z_][a-zA-Z0-9_]*``; names
    starting with ``__`` are dropped (as Prometheus drops them after
    relabelling), and so are labels with an empty value (Prometheus treats
    an empty label as an absent one). Of those, only ``__scheme__`` means
    something here, as in Prometheus: ``https`` (or ``http``) is the scheme
    of the group's ``host:port`` targets; ``__metrics_path__`` and the
    other Prometheus meta labels are ignored (the events path is fixed). Labels named like ours (``host``,
    ``id``, ``event_type``, ``oom_process``) are an error, not silently
    renamed, so a dashboard never shows a surprise.

    A target listed more than once (in one group or across groups) is
    followed once: the first occurrence wins and each later one is logged.
    Prometheus would scrape it twice, but two followers of one host would
    count every event twice.

    An empty file is an error, not "no targets": an editor rewriting the file
    in place truncates it first, and reading that moment as "no targets"
    would stop every follower and drop its series. Write ``[]`` to mean none.

    :raises TargetsFileError: naming ``source`` and what is wrong with it.
    """
    if not data.strip():
        raise TargetsFileError(f"{source}: file is empty (write [] for no targets)")
    document = _decode(data, source)
    if not isinstance(document, list):
        raise TargetsFileError(
            f"{source}: expected a list of target groups, got {_kind(document)}"
        )
    specs: list[TargetSpec] = []
    seen: dict[str, int] = {}
    for index, group in enumerate(document):
        where = f"{source}: group {index}"
        for spec in _parse_group(group, where):
            first = seen.get(spec.name)
            if first is not None:
                log.warn(
                    "{where}: target {name} already listed in group {first}; following it once",
                    where=where, name=spec.name, first=first,
                )
                continue
            seen[spec.name] = index
            specs.append(spec)
    return specs


def _decode(data: bytes, source: str) -> Any:
    """The document in ``data``: YAML by file name when possible, else JSON."""
    if source.lower().endswith(YAML_SUFFIXES):
        if yaml is None:
            raise TargetsFileError(
                f"{source}: YAML targets files need PyYAML, which is not installed "
                "(pip install PyYAML), or write the file as JSON"
            )
        try:
            return yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            raise TargetsFileError(f"{source}: not valid YAML: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TargetsFileError(f"{source}: not UTF-8: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TargetsFileError(f"{source}: not valid JSON: {e}") from None


def _parse_group(group: Any, where: str) -> list[TargetSpec]:
    """The specs of one ``{"targets": [...], "labels": {...}}`` group."""
    if not isinstance(group, dict):
        raise TargetsFileError(f"{where}: expected an object with \"targets\", got {_kind(group)}")
    unknown = sorted(str(k) for k in group if k not in GROUP_KEYS)
    if unknown:
        raise TargetsFileError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
            "(a group has only \"targets\" and \"labels\")"
        )
    if "targets" not in group:
        raise TargetsFileError(f"{where}: has no \"targets\" list")
    targets = group["targets"]
    if not isinstance(targets, list):
        raise TargetsFileError(f"{where}: \"targets\" must be a list, got {_kind(targets)}")
    labels = _parse_labels(group.get("labels"), where)
    scheme = _group_scheme(group.get("labels"), where)
    specs = []
    for position, text in enumerate(targets):
        if not isinstance(text, str):
            raise TargetsFileError(
                f"{where}: target {position} must be a string like \"host:8080\", "
                f"got {_kind(text)}"
            )
        if scheme is not None:
            text = _with_scheme(text, scheme, f"{where}: target {position}")
        try:
            target = parse_target(text)
        except TargetError as e:
            # The message of TargetError never carries a password; the raw text might.
            raise TargetsFileError(f"{where}: target {position}: {e}") from None
        specs.append(TargetSpec(target=target, labels=labels))
    return specs


def _parse_labels(labels: Any, where: str) -> Labels:
    """Validated, sorted label pairs of a group (``None`` or absent means none)."""
    if labels is None:
        return ()
    if not isinstance(labels, dict):
        raise TargetsFileError(f"{where}: \"labels\" must be an object, got {_kind(labels)}")
    pairs = []
    for name, value in labels.items():
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            raise TargetsFileError(
                f"{where}: label name {name!r} is not valid (must match [a-zA-Z_][a-zA-Z0-9_]*)"
            )
        if not isinstance(value, str):
            raise TargetsFileError(
                f"{where}: label {name!r} must have a string value, got {_kind(value)}"
            )
        if name.startswith("__"):
            continue
        if name in RESERVED_LABELS:
            raise TargetsFileError(
                f"{where}: label {name!r} collides with a label this exporter sets "
                f"({', '.join(sorted(RESERVED_LABELS))}); rename it"
            )
        if value:
            pairs.append((name, value))
    return tuple(sorted(pairs))


def _group_scheme(labels: Any, where: str) -> Optional[str]:
    """The group's ``__scheme__`` label (``http`` or ``https``), ``None`` when absent or empty.

    Prometheus reads ``__scheme__`` as the scheme its targets are scraped
    with; here it is the scheme the group's cAdvisors are followed with.
    Called after :func:`_parse_labels` has checked that ``labels`` is a
    mapping of strings.
    """
    if not labels:
        return None
    scheme = labels.get(SCHEME_LABEL)
    if not scheme:
        return None
    if scheme not in SCHEMES:
        raise TargetsFileError(
            f"{where}: label {SCHEME_LABEL!r} must be \"http\" or \"https\", not {scheme!r}"
        )
    return scheme


def _with_scheme(text: str, scheme: str, where: str) -> str:
    """``text`` as a URL of ``scheme``; a target written as a URL keeps its own scheme.

    Prometheus' targets are ``host:port`` only, so it has no rule for a URL
    under ``__scheme__``; the target's own URL is the more specific of the
    two and wins, with a warning when they disagree.
    """
    own, separator, _ = text.strip().partition("://")
    if not separator:
        return f"{scheme}://{text.strip()}"
    if own.lower() in SCHEMES and own.lower() != scheme:
        log.warn(
            "{where} is a {own}:// URL under {label}: {scheme}; following it with {own}",
            where=where, own=own.lower(), label=SCHEME_LABEL, scheme=scheme,
        )
    return text


_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
          str: "a string", list: "a list", dict: "an object"}


def _kind(value: Any) -> str:
    """A short description of a JSON/YAML value's type for error messages."""
    return _KINDS.get(type(value), type(value).__name__)


def merge_specs(*sets: Iterable[TargetSpec]) -> list[TargetSpec]:
    """Concatenate spec lists, keeping the first spec of each target name."""
    merged: dict[str, TargetSpec] = {}
    for specs in sets:
        for spec in specs:
            if spec.name in merged:
                if merged[spec.name] != spec:
                    log.warn("target {name} is configured twice; keeping the first", name=spec.name)
                continue
            merged[spec.name] = spec
    return list(merged.values())


Stamp = Optional[tuple]  # (mtime_ns, size, inode), None (missing) or ("error", errno)


class TargetsWatcher:
    """Keeps the desired target set (static + file + DNS) and reports it when it changes.

    Polls the file's ``(mtime_ns, size, inode)`` every ``interval`` seconds
    with one ``LoopingCall`` on the injected clock, because polling a stat is
    cheap, portable and sees in-place writes, atomic renames and a file that
    appears late alike. A file that fails to load (missing, unreadable,
    half-written, invalid) keeps the last good set; a partial write fails one
    reload and the next poll, seeing the stat change again, succeeds.

    ``last_reload_successful`` and ``last_reload_success_time`` (unix seconds
    from the clock, ``None`` before the first success) feed the
    ``cadvisor_events_config_last_reload_*`` gauges.
    """

    def __init__(
        self,
        static: list[TargetSpec],
        path: Optional[str],
        on_change: Callable[[list[TargetSpec]], None],
        clock,
        interval: float = 1.0,
    ) -> None:
        self.static = list(static)
        self.path = path
        self.on_change = on_change
        self.clock = clock
        self.interval = interval
        self.file_specs: list[TargetSpec] = []
        #: Targets of other discovery sources (DNS), by source name: see set_source.
        self.sources: dict[str, list[TargetSpec]] = {}
        self.last_reload_successful = True
        self.last_reload_success_time: Optional[float] = None
        self.last_error: Optional[str] = None
        self._stamp: Stamp = None
        self._reported: Optional[frozenset[TargetSpec]] = None
        self._loop: Optional[task.LoopingCall] = None
        self._stopped = False

    @property
    def specs(self) -> list[TargetSpec]:
        """The desired set now: static targets first, then the file's, then other sources'."""
        return merge_specs(self.static, self.file_specs, *self.sources.values())

    def start(self) -> bool:
        """Load the file (if any), report the first set, start polling; return whether the load worked."""
        self._stopped = False
        ok = self.reload()
        if self.path is not None and self._loop is None:
            self._loop = task.LoopingCall(self._poll)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)
        return ok

    def stop(self) -> None:
        """Stop polling; later reloads (a late SIGHUP) are ignored."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def set_static(self, specs: list[TargetSpec]) -> None:
        """Replace the static targets (e.g. the demo's simulator) and report the new set."""
        self.static = list(specs)
        self._report()

    def set_source(self, source: str, specs: list[TargetSpec]) -> None:
        """Replace the targets another discovery source (``"dns"``) found and report the new set."""
        self.sources[source] = list(specs)
        self._report()

    def reload(self) -> bool:
        """Re-read the file now, whatever its stat says (SIGHUP); return whether it loaded.

        On failure the last good file targets stay and the reason is logged.
        """
        if self._stopped:
            log.info("ignoring a targets reload after shutdown began")
            return self.last_reload_successful
        if self.path is not None:
            self._stamp = self._stat()
            try:
                self.file_specs = self._load(self.path)
            except TargetsFileError as e:
                self.last_reload_successful = False
                self.last_error = str(e)
                log.error("targets file not (re)loaded, keeping the last good set: {why}", why=e)
                self._report()
                return False
        self.last_reload_successful = True
        self.last_error = None
        self.last_reload_success_time = self.clock.seconds()
        self._report()
        return True

    def _poll(self) -> None:
        """One tick: reload if the file's stat changed. Never raises (it would end the loop)."""
        try:
            if self._stat() != self._stamp:
                self.reload()
        except Exception:
            log.failure("targets file poll failed")

    def _stat(self) -> Stamp:
        """What the file looks like now: when it changes, the file is re-read."""
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]  # only polled with a path
        except FileNotFoundError:
            return None
        except OSError as e:
            return ("error", e.errno)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @staticmethod
    def _load(path: str) -> list[TargetSpec]:
        """Read and parse ``path``; every failure becomes :class:`TargetsFileError`."""
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise TargetsFileError(f"{path}: file does not exist") from None
        except OSError as e:
            raise TargetsFileError(f"{path}: cannot read: {e.strerror or e}") from None
        if len(data) > MAX_FILE_BYTES:
            raise TargetsFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return parse_file_sd(data, path)

    def _report(self) -> None:
        """Call ``on_change`` with the desired set if it differs from the last one reported."""
        specs = self.specs
        key = frozenset(specs)
        if key == self._reported:
            return
        self._reported = key
        log.info("desired targets: {count}", count=len(specs))
        try:
            self.on_change(specs)
        except Exception:
            log.failure("applying the new target set failed")


def install_sighup(reactor, watcher: TargetsWatcher) -> Any:
    """Make SIGHUP reload ``watcher`` in the reactor thread; return the previous handler.

    A previous Python handler is still called (chained), so installing this
    never takes SIGHUP away from someone else. The handler itself only
    schedules the reload (``callFromThread`` is signal-safe); the reload runs
    in the reactor thread like any other event.
    """
    previous = signal.getsignal(signal.SIGHUP)

    def on_sighup(signum: int, frame: Any) -> None:
        reactor.callFromThread(watcher.reload)
        if callable(previous):
            previous(signum, frame)

    try:
        signal.signal(signal.SIGHUP, on_sighup)
    except (ValueError, AttributeError) as e:  # not the main thread, or no SIGHUP here
        log.warn("cannot reload targets on SIGHUP: {why}", why=e)
    return previous


def shard_of(target_name: str, shards: int) -> int:
    """The shard (``0 <= shard < shards``) that follows ``target_name``.

    A SHA-256 of the name, not ``hash()``: every replica, restart and Python
    version must agree, or two replicas would follow the same host (double
    counts) and none another (a blind spot).
    """
    if shards < 1:
        raise ValueError(f"shard count must be at least 1, not {shards}")
    digest = hashlib.sha256(target_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (this replica is shard ``I`` of ``N``); ``0 <= I < N``.

    :raises ValueError: with a message a person can act on.
    """
    index_text, slash, count_text = text.strip().partition("/")
    try:
        if not slash:
            raise ValueError
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"expected I/N such as 0/3 (shard I of N replicas), not {text!r}") from None
    if count < 1:
        raise ValueError(f"shard count N must be at least 1, not {count} (in {text!r})")
    if not 0 <= index < count:
        raise ValueError(f"shard index I must be between 0 and {count - 1}, not {index} (in {text!r})")
    return index, count
