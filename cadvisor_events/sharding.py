"""Which shard this replica is: ``--shard I/N``, or ``--shard auto`` from a StatefulSet pod's name.

A StatefulSet names its pods ``NAME-0`` .. ``NAME-(R-1)`` and each pod's host
name is its pod name, so ``--shard auto`` takes I from the host name's
trailing ``-N`` and N from ``--shards`` (the manifest sets it, with
``replicas``, from one number). Every inconsistency is an error before
anything starts, never a guess: two replicas on one shard count a host twice
and leave another shard unfollowed. Which targets a shard follows is
:func:`~cadvisor_events.targets.shard_of`'s job, not this module's.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Callable, Optional, Tuple

from .targets import parse_shard

AUTO = "auto"
#: A StatefulSet pod's host name: ``<statefulset name>-<ordinal>``, maybe followed by its domain.
_ORDINAL = re.compile(r"-(0|[1-9][0-9]*)\Z")


def current_hostname() -> str:
    """This host's name: ``$HOSTNAME`` when set (a pod's is its pod name), else the system's."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def ordinal_shard(hostname: str, shards: int) -> Tuple[int, int]:
    """``(I, N)`` for StatefulSet pod ``hostname``: I its ordinal, N ``shards``.

    Only the first label counts (``cadvisor-events-2.cadvisor-events.monitoring.svc``
    is ordinal 2).

    :raises ValueError: no trailing ``-N``, ``shards`` below 1 or the ordinal not below it.
    """
    pod = hostname.strip().split(".", 1)[0]
    match = _ORDINAL.search(pod)
    if match is None:
        raise ValueError(
            f"the host name {hostname!r} does not end in -N, the ordinal of a StatefulSet pod "
            "(set $HOSTNAME, or give --shard I/N)"
        )
    if shards < 1:
        raise ValueError(f"--shards must be at least 1, not {shards}")
    ordinal = int(match.group(1))
    if ordinal >= shards:
        raise ValueError(
            f"this pod's ordinal is {ordinal} (host name {hostname!r}) but --shards is {shards}: "
            f"ordinals run from 0 to {shards - 1}; set --shards to the StatefulSet's replicas"
        )
    return ordinal, shards


def choose_shard(shard: Optional[str], shards: Optional[int],
                 hostname: Callable[[], str] = current_hostname) -> Tuple[int, int]:
    """This replica's ``(I, N)`` from ``--shard`` (``I/N``, ``auto`` or not given) and ``--shards``.

    ``hostname`` is called only for ``auto`` (tests pass their own).

    :raises ValueError: naming the option(s) at fault.
    """
    if shards is not None and shards < 1:
        raise ValueError(f"--shards must be at least 1, not {shards}")
    if shard is None or not shard.strip():
        if shards is not None:
            raise ValueError(f"--shards {shards} is used with --shard auto (I from this pod's "
                             "ordinal): add --shard auto, or give --shard I/N alone")
        return 0, 1
    if shard.strip().lower() == AUTO:
        if shards is None:
            raise ValueError("--shard auto needs --shards N, the number of replicas "
                             "(or the environment variable CADVISOR_EVENTS_SHARDS)")
        try:
            return ordinal_shard(hostname(), shards)
        except ValueError as e:
            raise ValueError(f"--shard auto: {e}") from None
    try:
        index, count = parse_shard(shard)
    except ValueError as e:
        raise ValueError(f"--shard: {e}") from None
    if shards is not None and shards != count:
        raise ValueError(f"--shard {shard.strip()} says {count} shards but --shards says {shards}: "
                         "give the count once (--shard auto --shards N, or --shard I/N)")
    return index, count
