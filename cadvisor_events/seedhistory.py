"""A history body counted the way the Go seed decodes it (Go's ``encoding/json`` rules, exactly),
and the seed's answer rendered from those counts.

The seed (tsuru/cadvisor-events-exporter) reads a cAdvisor's history with a
``json.Decoder`` into cAdvisor v0.33's ``[]info.Event`` and counts what comes
out; /proxy must answer the same series wherever the seed answers 200, and
fail (502) wherever its decode fails. So this module follows Go, not the
followers' strict :mod:`cadvisor_events.event` types: missing fields and
``null`` are zero values, unknown fields are ignored, keys match
case-insensitively (Go's folding), repeated objects merge, only the first
JSON value of the body is read, a wrong JSON type or a timestamp
``time.Parse`` rejects is an error.

Three paths, each taking only what the one before refuses: the whole-body
path (:func:`seed_counts`) cuts what cAdvisor writes into chunks, decodes
them with msgspec and counts string keys that render without a Python step
per series; the batched path (:func:`count_history`) splits any array into
its elements and decodes batches with msgspec; an exact re-implementation of
Go's scanner and decoder (:func:`count_as_go`) takes the batches msgspec
might read differently from Go. Longer than ~400 lines for that reason: the
paths and Go's corner cases belong together. It never does I/O and keeps
nothing between calls.
"""

from __future__ import annotations

import bisect
import collections
import datetime
import json
import re
from itertools import chain, compress, repeat, starmap
from operator import attrgetter, itemgetter, ne, not_, sub
from typing import Annotated, Iterator, Mapping, Optional, Union

import msgspec

from .event import CountingKey, InvalidEvent
from .exposition import EVENTS_METRIC, escape_label_value, family_header, format_value, render_seed_counts

__all__ = ["seed_counts", "SeedCounts", "count_history", "count_as_go", "history_elements", "DECODE_BATCH"]


def count_history(body: bytes) -> dict[CountingKey, int]:
    """Count a history body by the Go seed's rule, decoding it as the seed decodes it.

    The seed reads the body with ``json.NewDecoder(body).Decode(&events)``
    into ``[]info.Event`` of cAdvisor v0.33.1 (its ``ListEvents`` in
    cmd/cadvisor-events-proxy/main.go), and on an error answers 500. A
    Decoder, not ``json.Unmarshal``: it decodes the first JSON value and
    never reads what follows. Its rules are listed at :func:`count_as_go`;
    what they accept, this counts the same, and where they fail, this raises.

    msgspec first splits the array into raw elements (checking the JSON, making
    no event objects), then each batch of a few hundred goes through
    :func:`_batch_keys`, msgspec's decode of the shape cAdvisor writes; a
    batch it refuses, or might decode differently from Go, goes through
    :func:`count_as_go` instead (slow, but only that batch). Decoding a
    whole history at once would make its event objects the largest
    allocation of a /proxy answer; a batch stays small, in the CPU cache and
    out of the garbage collector's way (benchmarks/proxy.py measures it).

    :raises InvalidEvent: for no JSON value, broken JSON, a first value that is
        neither an array nor ``null``, an element or a field of the wrong JSON
        type, a timestamp Go's ``time.Parse`` refuses. A position in the
        message counts from the start of the whole array.
    """
    if body.startswith(b"null", _skip_whitespace(body, 0)):
        return {}  # Go leaves the slice nil: an empty history
    try:
        elements = history_elements.decode(body)
    except msgspec.ValidationError as e:
        raise InvalidEvent(str(e)) from None  # valid JSON, but not an array
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        found = _first_array_elements(body, e)
        if found is None:
            return count_as_go(body)
        elements = found
    counts: collections.Counter[CountingKey] = collections.Counter()
    for start in range(0, len(elements), DECODE_BATCH):
        batch = b"".join((b"[", b",".join(elements[start : start + DECODE_BATCH]), b"]"))
        keys = _batch_keys(batch)
        counts.update(count_as_go(batch, first_index=start) if keys is None else keys)
    return counts


history_elements = msgspec.json.Decoder(list[msgspec.Raw])
#: Events decoded at a time by :func:`count_history`.
DECODE_BATCH = 256
#: Go's JSON whitespace, the only bytes its scanner skips between tokens.
_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_TRAILING_AT = re.compile(r"trailing characters \(byte (\d+)\)")


def _skip_whitespace(data: bytes, pos: int) -> int:
    match = _WHITESPACE.match(data, pos)
    return match.end() if match else pos


def _first_array_elements(body: bytes, error: Exception) -> Optional[list[msgspec.Raw]]:
    """The elements of the array ``body`` starts with, when msgspec refused only what follows it.

    msgspec wants nothing after the value and says where the rest begins.
    Cut after the last ``]`` before that point and split again: if the cut
    part is a whole array, it is the first value (a shorter prefix ending in
    ``]`` would leave a bracket open). None for any other refusal: the exact
    path decides then.
    """
    found = _TRAILING_AT.search(str(error))
    if found is None:
        return None
    end = body.rfind(b"]", 0, int(found.group(1))) + 1
    if end <= 0:
        return None
    try:
        return history_elements.decode(memoryview(body)[:end])
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


# The fast path: the shape cAdvisor writes, keys spelled exactly. msgspec
# refuses any other key (forbid_unknown_fields), a null (except in the raw
# fields), a pid outside Go's int64. What it accepts it decodes as Go does,
# except for repeated keys, which _batch_keys looks for.

#: Stands for a field the JSON did not have (a decoded Raw is never empty).
_ABSENT = msgspec.Raw(b"")
_GoInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _SeedOom(msgspec.Struct, frozen=True, eq=False, forbid_unknown_fields=True, gc=False):
    """``event_data.oom``. The seed's types have no ``constraint`` (newer
    cAdvisors write it): any value of it is ignored, as Go ignores it.
    ``eq=False``: compared by identity, so the default stands out in a count."""

    pid: _GoInt = 0
    process_name: str = ""
    constraint: msgspec.Raw = _ABSENT


_NO_OOM = _SeedOom()


class _SeedData(msgspec.Struct, frozen=True, eq=False, forbid_unknown_fields=True, gc=False):
    """``event_data``; ``container_deletion`` (newer cAdvisors) is ignored like ``constraint``."""

    oom: _SeedOom = _NO_OOM
    container_deletion: msgspec.Raw = _ABSENT


class _SeedEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One event of /proxy's fast path: every field optional, unlike the followers'
    :class:`~cadvisor_events.event.Event`. ``timestamp`` stays raw JSON: Go parses
    the text between the quotes, escapes and all (see :func:`_go_parses_time`)."""

    container_name: str = ""
    timestamp: msgspec.Raw = _ABSENT
    event_type: str = ""
    event_data: _SeedData = _SeedData()


_seed_batch = msgspec.json.Decoder(list[_SeedEvent])
#: ``\u`` escapes of the characters field names are made of (``_``, ``a``-``z``):
#: a key spelled with them would match a field unseen by the key counts.
_ESCAPED_NAME_CHARACTER = re.compile(rb"\\u00(?:5[fF]|6[1-9a-fA-F]|7[0-9aA])")
#: Timestamps as cAdvisor writes them, one per line (empty when absent): a
#: subset of what Go's ``time.Parse(time.RFC3339, ...)`` accepts, checked at once.
_CANONICAL_TIME = (
    rb'"[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)'
    rb"|(?:0[13578]|1[02])-31)T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    rb'(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"'
)
_CANONICAL_TIME_LINES = re.compile(rb"(?:(?:%s|null)?\n)*(?:%s|null)?" % (_CANONICAL_TIME, _CANONICAL_TIME))


def _batch_keys(batch: bytes) -> Optional[list[CountingKey]]:
    """The counting keys of a batch (a JSON array of events) as msgspec decodes
    it, or None when Go might decode it differently: a key other than
    cAdvisor's exact ones, a null, a type msgspec refuses, a timestamp that
    is not plainly valid, a repeated ``timestamp`` or ``oom`` key. Go checks
    every repeat of a timestamp and decodes a repeated object into the same
    struct (merging) where msgspec keeps the last; of a repeated
    ``event_data``, only the ``oom`` keys it holds matter.

    Repeats are found by counting ``"timestamp"`` and ``"oom"`` in the text.
    Each such key is one, so more of them than events that have the field
    (plus, for ``"oom"``, events of that type) means a repeat, or the word
    as another value or inside a raw field, which only sends the batch the
    exact way. A key written with ``\\u`` escapes would not be counted: such
    batches are refused first.
    """
    if _ESCAPED_NAME_CHARACTER.search(batch):
        return None
    try:
        events = _seed_batch.decode(batch)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    stamps = [event.timestamp for event in events]
    if _CANONICAL_TIME_LINES.fullmatch(b"\n".join(stamps)) is None and not all(map(_go_parses_time, stamps)):
        return None
    ooms = [event.event_data.oom for event in events]
    kinds = [event.event_type for event in events]
    if (
        batch.count(b'"timestamp"') != len(stamps) - stamps.count(_ABSENT)
        or batch.count(b'"oom"') != len(ooms) - ooms.count(_NO_OOM) + kinds.count("oom")
    ):
        return None
    return [(event.container_name, kind, oom.process_name) for event, kind, oom in zip(events, kinds, ooms)]


# The whole-body path: what cAdvisor writes, counted and rendered without a
# Python loop per event, and per series only for those with a process name.
# Counting keys are strings ``event_type NUL container_name``, with
# ``SOH process_name`` appended (in a counter of their own) when that is not
# empty: NUL and SOH sort below every other character, so sorting the strings
# sorts the series as client_golang does, ASCII strings sort by memcmp, and
# the keys become the answer's lines by whole-text joins and replaces.

_timestamp_of = attrgetter("timestamp")
_oom_of = attrgetter("event_data.oom")
_type_of = attrgetter("event_type")
_process_of = attrgetter("process_name")
_type_and_name_of = attrgetter("event_type", "container_name")
_slow_parts_of = attrgetter("event_type", "container_name", "event_data.oom.process_name")
#: The batch check of _batch_keys, without backtracking (atomic groups, possessive
#: repeats), for the timestamps msgspec's parser is not given.
_CANONICAL_STAMPS = re.compile(rb"(?>(?:%s|null)?\n)*+(?:%s|null)?" % (_CANONICAL_TIME, _CANONICAL_TIME))
_LINE_START = f'{EVENTS_METRIC}{{event_type="'
#: The end of a line without an oom_process, by value (values below 4096 are the rule).
_PLAIN_ENDINGS = ['",oom_process=""} %d\n' % value for value in range(4096)]
_SLOW_MARK = "\x01"


class SeedCounts:
    """One history's counts, ready to be rendered as the Go seed's answer.

    Either the whole-body path's string keys (see above): the plain ones
    sorted with their counts alongside, those with a process name in a dict;
    or, for what that path refuses, :func:`count_history`'s tuple-keyed counts.
    """

    def __init__(self, counts: Union[Mapping[CountingKey, int], _StringCounts]) -> None:
        self._counts = counts

    def as_dict(self) -> dict[CountingKey, int]:
        """The counts keyed by (container_name, event_type, oom_process), as count_history gives them."""
        if not isinstance(self._counts, tuple):
            return dict(self._counts)
        keys, values, slow = self._counts
        result: dict[CountingKey, int] = {}
        for key, value in chain(zip(keys, values), slow.items()):
            event_type, _, rest = key.partition("\0")
            name, _, process = rest.partition(_SLOW_MARK)
            result[(name, event_type, process)] = value
        return result

    def render(self) -> bytes:
        """The seed's exposition of these counts: the bytes :func:`render_seed_counts` gives.

        Once: the counts are emptied as their lines are made, so that a
        history's keys are freed before its answer's text exists.
        """
        counts, self._counts = self._counts, {}
        if not isinstance(counts, tuple):
            return render_seed_counts(counts)
        keys, values, slow = counts
        del counts
        return _render_string_keyed(keys, values, slow) if keys or slow else b""


def seed_counts(body: bytes) -> SeedCounts:
    """Count a history body as :func:`count_history` does, by the fastest way that gives the same answer.

    A body as cAdvisor writes it goes through :func:`_whole_body_counts`;
    anything it refuses through :func:`count_history`. The body is not kept.

    :raises InvalidEvent: as :func:`count_history`.
    """
    counts = _whole_body_counts(body)
    return SeedCounts(count_history(body) if counts is None else counts)


def _whole_body_counts(body: bytes) -> Optional[_StringCounts]:
    """The string-keyed counts of a body (the sorted plain keys, their counts,
    the keys with a process name and theirs), or None when
    :func:`count_history` must decide.

    The body is cut into chunks of about :data:`CHUNK_BYTES` where an element
    ends and the next begins with cAdvisor's first key (``},{"container_name"``),
    each made an array of its own and decoded and checked as
    :func:`_batch_keys` does a batch: a chunk stays in the CPU cache, and its
    events are freed before the next is decoded (decoding the whole body at
    once is much slower, its objects out of the cache). The needle cannot occur inside a JSON string
    (its quote would be escaped), and a cut inside a nested value leaves
    brackets open, which the decode refuses: so when every chunk decodes,
    the cuts were between top-level elements. Also None for an event type or
    container name holding NUL, SOH, a quote, a backslash or a newline, which
    the string keys cannot carry through :func:`_render_string_keyed`.

    The plain keys (most) are counted by sorting them all, which the answer
    needs anyway, and measuring the runs of equal ones: cheaper than a
    dict of tens of thousands of new strings, and no dict to keep.
    """
    if body[:1] != b"[":
        return None
    keys: list[str] = []
    slow_parts: list[CountingKey] = []
    for chunk in _chunks(body):
        events = _chunk_events(chunk)
        if events is None:
            return None
        processes = list(map(_process_of, map(_oom_of, events)))
        if processes.count("") == len(processes):
            keys += map("\0".join, map(_type_and_name_of, events))
        else:
            keys += map("\0".join, map(_type_and_name_of, compress(events, map(not_, processes))))
            slow_parts += map(_slow_parts_of, compress(events, processes))
    keys.sort()
    total = len(keys)
    firsts = [True]  # where each run of equal keys starts
    firsts += map(ne, keys[1:], keys[:-1])
    starts = list(compress(range(total), firsts))
    keys = list(compress(keys, firsts))
    del firsts
    if not _plain_labels("\n".join(keys), len(keys)):
        return None
    if slow_parts:
        if not _plain_labels("\n".join([f"{kind}\0{name}" for kind, name, _ in slow_parts]), len(slow_parts)):
            return None
    starts.append(total)
    values = list(map(sub, starts[1:], starts))
    return keys, values, dict(collections.Counter(starmap("{}\0{}\x01{}".format, slow_parts)))


#: The whole-body path's counts: sorted plain keys, their counts, keys with a process name.
_StringCounts = tuple[list[str], list[int], dict[str, int]]


#: Where a chunk may end: an element's end, then the next one's first key as cAdvisor writes it.
_CHUNK_END = b'},{"container_name"'
#: Bytes per chunk of :func:`_whole_body_counts` (a few hundred events).
CHUNK_BYTES = 64 * 1024


def _chunks(body: bytes) -> Iterator[bytes]:
    """``body`` (an array: it starts with ``[``) cut into arrays of about :data:`CHUNK_BYTES`."""
    whole = memoryview(body)
    start = 1
    while start:
        cut = body.find(_CHUNK_END, start + CHUNK_BYTES) + 1
        yield b"".join((b"[", whole[start:cut], b"]") if cut else (b"[", whole[start:]))
        start = cut and cut + 1


def _chunk_events(chunk: bytes) -> Optional[list[_SeedEvent]]:
    """The events of a chunk (a JSON array), or None when Go might decode it
    differently: :func:`_batch_keys`'s checks, with the timestamps checked
    without backtracking."""
    if _has_escaped_name(chunk):
        return None
    try:
        events = _seed_batch.decode(chunk)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    stamps = list(map(_timestamp_of, events))
    if not _go_parses_times(stamps):
        return None
    ooms = list(map(_oom_of, events))
    types = list(map(_type_of, events))
    if (
        chunk.count(b'"timestamp"') != len(stamps) - stamps.count(_ABSENT)
        or chunk.count(b'"oom"') != len(ooms) - ooms.count(_NO_OOM) + types.count("oom")
    ):
        return None
    return events


def _plain_labels(keys: str, n: int) -> bool:
    """Whether ``n`` keys ``event_type NUL container_name`` joined by newlines hold no character
    that would need escaping or would break the sort: nothing but their own NULs and newlines."""
    try:
        text = keys.encode()
    except UnicodeEncodeError:
        return False
    return text.translate(None, _ALL_BUT_SPECIAL) == b"\0" + b"\n\0" * (n - 1) if n else True


#: Every byte but those _plain_labels looks for (NUL, SOH, newline, quote, backslash).
_ALL_BUT_SPECIAL = bytes(set(range(256)) - set(b'\0\x01\n"\\'))


def _has_escaped_name(data: bytes) -> bool:
    """Whether ``data`` (valid JSON) holds a ``\\u`` escape of a character field names are made
    of: each backslash starts an escape (the first one does, and each escape is skipped whole),
    and only there is the pattern tried. Faster than searching the whole text for it."""
    found = data.find(b"\\")
    while found >= 0:
        if _ESCAPED_NAME_CHARACTER.match(data, found):
            return True
        found = data.find(b"\\", found + 2)
    return False


_stamp_list = msgspec.json.Decoder(list[datetime.datetime])


def _go_parses_times(stamps: list[msgspec.Raw]) -> bool:
    """Whether Go's ``Time.UnmarshalJSON`` accepts every one of these raw timestamps (b"" when absent).

    msgspec's RFC 3339 parser checks them in C (real dates, leap years,
    ranges) and accepts a subset of what Go accepts, plus a few forms Go
    refuses, which are excluded first: any byte but digits and ``-:.TZ+``
    (so no lowercase ``t`` or ``z``, no space, no escape), and a colon count
    that only holds when each stamp without ``Z`` ends with a ``+hh:mm``
    offset (not ``+hhmm``, not none). What this refuses goes through
    :data:`_CANONICAL_STAMPS` and then :func:`_go_parses_time` one by one.
    """
    text = b",".join(stamps)
    if (
        not stamps or stamps.count(_ABSENT) or b"t" in text or b"z" in text or b" " in text or b"\\" in text
        or text.count(b":") != 3 * len(stamps) - text.count(b"Z")
    ):
        return _CANONICAL_STAMPS.fullmatch(b"\n".join(stamps)) is not None or all(map(_go_parses_time, stamps))
    try:
        _stamp_list.decode(b"".join((b"[", text, b"]")))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return all(map(_go_parses_time, stamps))
    return True


def _render_string_keyed(keys: list[str], values: list[int], slow: dict[str, int]) -> bytes:
    """:func:`render_seed_counts` of string-keyed counts, whole-text.

    The sorted plain keys are interleaved with their line ends (by value, each
    followed by the next line's start) and joined once; NUL becomes
    ``",id="`` in one replace of the encoded text. The keys with a process
    name (a minority: OOM kills) are sorted apart (so that the plain keys,
    ASCII as a rule, sort by memcmp), placed among the plain ones by
    bisection as SOH marks, rendered together (each a join of its parts,
    its process escaped) and put in place of the marks. Only the placing
    takes a Python step per key with a process name. The arguments are
    emptied on the way.
    """
    if max(values, default=0) < len(_PLAIN_ENDINGS):
        ends = list(map(_ENDS_THEN_START.__getitem__, values))
    else:
        ends = [f'",oom_process=""}} {format_value(value)}\n{_LINE_START}' for value in values]
    values.clear()
    slow_lines: list[bytes] = []
    if slow:
        slow_keys = sorted(slow)
        merged_keys: list[str] = []
        merged_ends: list[str] = []
        previous = 0
        for position in map(bisect.bisect_right, repeat(keys), slow_keys):
            merged_keys += keys[previous:position]
            merged_ends += ends[previous:position]
            merged_keys.append(_SLOW_MARK)
            merged_ends.append(_LINE_START)
            previous = position
        merged_keys += keys[previous:]
        merged_ends += ends[previous:]
        keys.clear()
        keys, ends = merged_keys, merged_ends
        counts = list(map(slow.__getitem__, slow_keys))
        slow.clear()
        heads = list(map(str.partition, slow_keys, repeat(_SLOW_MARK)))  # (type NUL name, SOH, process)
        del slow_keys
        labels = list(map(str.partition, map(_first_part, heads), repeat("\0")))  # (type, NUL, name)
        slow_ends = (map(_SLOW_ENDINGS.__getitem__, counts) if max(counts) < len(_SLOW_ENDINGS)
                     else (f'"}} {format_value(count)}\n' for count in counts))
        slow_lines = list(map(str.encode, map("".join, zip(
            map(_first_part, labels), repeat('",id="'), map(_third_part, labels), repeat('",oom_process="'),
            map(escape_label_value, map(_third_part, heads)), slow_ends))))
        del heads, labels, counts
    ends[-1] = ends[-1][: -len(_LINE_START)]  # nothing starts after the last line
    text = "".join(chain((family_header().decode() + _LINE_START,), chain.from_iterable(zip(keys, ends)))).encode()
    keys.clear()
    del ends
    text = text.replace(b"\0", b'",id="')
    if not slow_lines:
        return text
    whole = memoryview(text)
    pieces: list[object] = []
    start = 0
    for line in slow_lines:
        end = text.index(b"\x01", start)
        pieces += (whole[start:end], line)
        start = end + 1
    pieces.append(whole[start:])
    return b"".join(pieces)  # type: ignore[arg-type]


#: A plain line's end by value, and the next line's start.
_ENDS_THEN_START = [ending + _LINE_START for ending in _PLAIN_ENDINGS]
#: The end of a line with an oom_process, by value.
_SLOW_ENDINGS = ['"} %d\n' % value for value in range(4096)]
_first_part, _third_part = itemgetter(0), itemgetter(2)


# The exact path: Go's scanner and decoder written out, a Python loop per
# token, for what the fast path refuses.

#: Go's encoding/json refuses JSON nested deeper than this.
_MAX_DEPTH = 10000
_TOKEN = re.compile(
    rb"[ \t\n\r]*(?:"
    rb'("[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*")'  # 1: string
    rb"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"  # 2: number
    rb"|(true|false|null)"  # 3: literal
    rb"|([\[\]{},:]))"  # 4: punctuation
)
_LITERALS = {b"true": True, b"false": False, b"null": None}
_GO_INT = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_SURROGATES = re.compile("[\ud800-\udfff]")


class _String(bytes):
    """A JSON string token, quotes and escapes included (Go parses a timestamp from this text)."""


class _Number(bytes):
    """A JSON number token as written."""


class _Members(list):
    """A JSON object: its (key token, value) pairs in order, repeated keys included."""


def _parse_json(data: bytes) -> object:
    """The first JSON value of ``data`` as Go's scanner reads it; what follows is not looked at.

    Values are None, True, False, :class:`_String`, :class:`_Number`, list and
    :class:`_Members`. No recursion, so any depth up to Go's limit works.

    :raises InvalidEvent: where Go's scanner fails: a syntax error, an
        unexpected end, no value at all, nesting deeper than 10,000.
    """
    stack: list[list] = []  # the open arrays and objects
    keys: list[bytes] = []  # of each open object, the key whose value is being read
    expect = "value"
    pos = 0
    while True:
        match = _TOKEN.match(data, pos)
        if match is None:
            raise _syntax_error(data, pos, started=expect != "value" or bool(stack))
        pos = match.end()
        kind = match.lastindex
        token = match.group(kind or 0)
        value: object
        if expect == "value" or expect == "value or ]":
            if kind == 1:
                value = _String(token)
            elif kind == 2:
                value = _Number(token)
            elif kind == 3:
                value = _LITERALS[token]
            elif token == b"[" or token == b"{":
                if len(stack) >= _MAX_DEPTH:
                    raise InvalidEvent(f"JSON nested deeper than {_MAX_DEPTH} levels (Go's limit) at byte {pos - 1}")
                stack.append([] if token == b"[" else _Members())
                expect = "value or ]" if token == b"[" else "key or }"
                continue
            elif token == b"]" and expect == "value or ]":
                value = stack.pop()
            else:
                raise _syntax_error(data, match.start(kind or 0), expected=expect)
        elif expect == "key" or expect == "key or }":
            if kind == 1:
                keys.append(token)
                expect = ":"
                continue
            if token != b"}" or expect != "key or }":
                raise _syntax_error(data, match.start(kind or 0), expected=expect)
            value = stack.pop()
        elif expect == ":":
            if token != b":":
                raise _syntax_error(data, match.start(kind or 0), expected=expect)
            expect = "value"
            continue
        else:  # after a value inside an array or object
            in_array = type(stack[-1]) is list
            if token == b",":
                expect = "value" if in_array else "key"
                continue
            if token != (b"]" if in_array else b"}"):
                raise _syntax_error(data, match.start(kind or 0), expected=expect)
            value = stack.pop()
        if not stack:
            return value
        if type(stack[-1]) is list:
            stack[-1].append(value)
            expect = ", or ]"
        else:
            stack[-1].append((keys.pop(), value))
            expect = ", or }"


def _syntax_error(data: bytes, pos: int, started: bool = True, expected: str = "value") -> InvalidEvent:
    """What is wrong at ``pos``: the end of the input, or the byte there."""
    pos = _skip_whitespace(data, pos)
    if pos >= len(data):
        if not started:
            return InvalidEvent("no JSON value: the body is empty")
        return InvalidEvent(f"unexpected end of JSON input: truncated at byte {pos}")
    byte = data[pos]
    shown = repr(chr(byte)) if 0x20 <= byte < 0x7F else f"0x{byte:02x}"
    return InvalidEvent(f"invalid character {shown} at byte {pos} looking for {expected}")


def _unquote(token: bytes) -> str:
    """A string token's text as Go decodes it: escapes resolved, each byte of
    invalid UTF-8 and each unpaired surrogate escape made U+FFFD."""
    text = token.decode("utf-8", "surrogateescape")  # one U+DCxx per invalid byte
    text = json.loads(text) if "\\" in text else text[1:-1]
    if not text.isascii() and _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _go_field(key: bytes, fields: frozenset[str]) -> Optional[str]:
    """The field of ``fields`` that an object key sets in Go, or None: the name
    spelled exactly, else equal under Go's case folding (``bytes.EqualFold``).
    For these all-ASCII names that is ASCII case, plus the two letters whose
    simple case folding is ASCII: U+017F (long s) is ``s``, U+212A (Kelvin) is ``k``."""
    name = _unquote(key)
    if not name.isascii():
        name = name.replace("\u017f", "s").replace("\u212a", "k")
        if not name.isascii():
            return None
    name = name.lower()
    return name if name in fields else None


_EVENT_FIELDS = frozenset(("container_name", "timestamp", "event_type", "event_data"))
_DATA_FIELDS = frozenset(("oom",))
_OOM_FIELDS = frozenset(("pid", "process_name"))


def count_as_go(data: bytes, first_index: int = 0) -> dict[CountingKey, int]:
    """Count the first JSON value of ``data`` exactly as the seed does, slowly.

    Go's ``json.Decoder.Decode`` into ``[]info.Event`` (cAdvisor v0.33.1):
    ``null`` is an empty history; an element ``null`` is a zero event (``""``
    everywhere); a field missing or ``null`` keeps its zero value (but
    ``null`` for ``oom``, a pointer, makes it nil again); keys match fields
    spelled exactly or else case-insensitively; a repeated key is decoded
    again into the same field, so the last string wins and repeated objects
    merge; unknown keys are skipped whatever they hold; ``pid`` must be an
    integer in int64; ``timestamp``, unless ``null``, must be a string whose
    raw text ``time.Parse(time.RFC3339, ...)`` accepts; any other JSON type
    for a field or an element fails the whole decode. The key counted is the
    seed's ``eventsToMetrics`` one: (container_name, event_type,
    oom.process_name if oom is set else ``""``).

    :raises InvalidEvent: where that decode fails; element positions count
        from ``first_index``.
    """
    history = _parse_json(data)
    if history is None:
        return {}
    if type(history) is not list:
        raise _type_error(history, "[]info.Event", "$")
    counts: dict[CountingKey, int] = {}
    get = counts.get
    for index, element in enumerate(history, first_index):
        key = _go_event_key(element, f"$[{index}]")
        counts[key] = get(key, 0) + 1
    return counts


def _go_event_key(element: object, path: str) -> CountingKey:
    """The counting key of one element, decoded by Go's rules (see :func:`count_as_go`)."""
    if element is None:
        return ("", "", "")
    if type(element) is not _Members:
        raise _type_error(element, "info.Event", path)
    name = event_type = ""
    oom: Optional[str] = None  # the process name once event_data.oom is set
    for key, value in element:
        field = _go_field(key, _EVENT_FIELDS)
        where = f"{path}.{field}"
        if field == "container_name":
            name = _go_string(value, name, where)
        elif field == "event_type":
            event_type = _go_string(value, event_type, where)
        elif field == "timestamp" and value is not None:
            if type(value) is not _String:
                raise _type_error(value, "time.Time", where)
            if not _go_parses_time(value):
                text = value.decode("utf-8", "replace")
                raise InvalidEvent(f"parsing time {text} as RFC 3339 (Go's time.Parse) failed - at `{where}`")
        elif field == "event_data" and value is not None:  # a struct: null leaves it as it is
            if type(value) is not _Members:
                raise _type_error(value, "v1.EventData", where)
            for data_key, data_value in value:
                if _go_field(data_key, _DATA_FIELDS) is not None:
                    oom = _go_oom(data_value, oom, f"{where}.oom")
    return (name, event_type, oom or "")


def _go_oom(value: object, process: Optional[str], where: str) -> Optional[str]:
    """``event_data.oom`` (a pointer) after ``value``: None when nil, else its process name.

    ``null`` makes it nil again; an object is decoded into it, into a new
    zero one when it was nil.
    """
    if value is None:
        return None
    if type(value) is not _Members:
        raise _type_error(value, "v1.OomKillEventData", where)
    process = process or ""
    for key, item in value:
        field = _go_field(key, _OOM_FIELDS)
        if field == "process_name":
            process = _go_string(item, process, f"{where}.process_name")
        elif field == "pid" and item is not None:
            if type(item) is not _Number or not _GO_INT.fullmatch(item) or not -(2**63) <= int(item) < 2**63:
                raise _type_error(item, "int", f"{where}.pid")
    return process


def _go_string(value: object, current: str, where: str) -> str:
    """A string field after ``value``: its text, or ``current`` for null."""
    if value is None:
        return current
    if type(value) is not _String:
        raise _type_error(value, "string", where)
    return _unquote(value)


def _type_error(value: object, go_type: str, where: str) -> InvalidEvent:
    """Go's UnmarshalTypeError, with the JSON path of the value."""
    if type(value) is _Number:
        kind = f"number {bytes(value).decode()}"  # as strconv's failures show it
    else:
        kind = {bool: "bool", _String: "string", list: "array", _Members: "object"}.get(type(value), "null")
    field = where.partition(".")[2]
    into = f"Go struct field Event.{field}" if field else "Go value"
    return InvalidEvent(f"json: cannot unmarshal {kind} into {into} of type {go_type} - at `{where}`")


_GO_TIME = re.compile(
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:[.,][0-9]+)?"
    rb"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _go_parses_time(raw: bytes) -> bool:
    """Whether Go's ``Time.UnmarshalJSON`` accepts this raw JSON value (b"" when absent).

    ``null`` is accepted (and changes nothing); else it must be a string whose
    text between the quotes, escapes not resolved, ``time.Parse(time.RFC3339,
    ...)`` accepts (``parseStrictRFC3339``'s stricter checks are switched off
    in Go): a 4-digit year, a month 01-12, a day that month has, ``T``, a 1-
    or 2-digit hour below 24, minutes and seconds below 60, optional
    fractional seconds after ``.`` or ``,`` (any number of digits), then
    ``Z`` or ``+hh:mm``/``-hh:mm``. Go 1.20 and later refuse an offset above
    24:60 and Go before 1.17 a comma; the seed's image was built with
    whatever Go was current, so both are accepted here.
    """
    raw = bytes(raw)
    if raw == b"" or raw == b"null":
        return True
    parts = _GO_TIME.fullmatch(raw, 1, len(raw) - 1) if raw[:1] == raw[-1:] == b'"' and len(raw) > 1 else None
    if parts is None:
        return False
    year, month, day, hour, minute, second = (int(part) for part in parts.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and hour < 24 and minute < 60 and second < 60):
        return False
    leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 1 <= day <= _DAYS_IN_MONTH[month] + leap
