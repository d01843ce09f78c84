"""One compiled limit (a *quota*), the strategies, and limit parsing.

A :class:`Quota` is immutable and precomputed once: its header items and key
fragment never change, so a request only formats its own numbers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, TypeAlias

from limits import RateLimitItem, parse_many

from seawall.exceptions import ConfigurationError

__all__ = [
    "FIXED",
    "GCRA",
    "MOVING",
    "SLIDING",
    "STRATEGIES",
    "Banned",
    "HitResult",
    "Quota",
    "parse_quotas",
    "policy_name",
]

FIXED, MOVING, SLIDING, GCRA = 0, 1, 2, 3

#: Strategy names users write -> internal codes.
STRATEGIES: dict[str, int] = {
    "fixed-window": FIXED,
    "moving-window": MOVING,
    "sliding-window-counter": SLIDING,
    "gcra": GCRA,
    "token-bucket": GCRA,
}

#: ``(allowed, [(remaining, reset_seconds, retry_seconds), ...])``, one tuple per quota.
HitResult: TypeAlias = tuple[bool, list[tuple[int, float, float]]]


class Banned(tuple[bool, list[tuple[int, float, float]]]):
    """The :data:`HitResult` of a key under a ban: refused, nothing consumed.

    Every quota reports 0 remaining and the ban's time left as its reset
    and retry, so the usual headers and ``Retry-After`` follow; the type
    tells the layer why.
    """

    __slots__ = ()

    @classmethod
    def of(cls, left: float, quotas: int) -> Banned:
        """The answer for a ban with *left* seconds to run, over *quotas* quotas."""
        return cls((False, [(0, left, left)] * quotas))


_UNSAFE = re.compile(r"[^A-Za-z0-9._:/*+{} -]+")


def policy_name(text: str) -> str:
    """A safe Structured Fields string for a policy name (no quotes, no controls).

    Names also scope storage keys, so a name cut to 64 characters ends in a
    digest of the whole text: two long handler names that share their first
    characters must never share a counter.
    """
    name = _UNSAFE.sub("-", text).strip("-") or "policy"
    if len(name) <= 64:
        return name
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{name[:55]}-{digest}"


class Quota:
    """*amount* units per *window* seconds, as one policy of one rule.

    Attributes:
        amount: units admitted per window.
        window: the window, in seconds.
        interval: seconds per unit (GCRA's emission interval).
        name: the policy name in the ``RateLimit``/``RateLimit-Policy`` fields.
        tag: the key fragment that tells this quota's counters apart.
        policy: the precomputed ``RateLimit-Policy`` item.
        head: the precomputed start of its ``RateLimit`` item.
        spec: the limits string this came from (``"100 per 1 minute"``).
        wire: amount and window (µs) as the Redis scripts' arguments.
        resp: ``wire`` framed as RESP bulk strings.
        window_ms: the window in whole milliseconds, rounded up (a key's TTL).
        px: ``PX <window_ms> NX`` framed as RESP bulk strings (the fixed
            window's ``SET``, :func:`seawall._wire.fixed_frame`).
    """

    __slots__ = (
        "amount",
        "head",
        "interval",
        "name",
        "policy",
        "px",
        "resp",
        "spec",
        "tag",
        "window",
        "window_ms",
        "wire",
    )

    def __init__(self, amount: int, window: float, name: str, spec: str = "") -> None:
        if amount < 1 or window <= 0:
            msg = f"a limit needs a positive amount and window, got {amount} per {window} s"
            raise ConfigurationError(msg)
        self.amount = amount
        self.window = float(window)
        self.interval = self.window / amount
        self.name = name
        self.tag = f"{amount}/{window:g}"
        self.policy = f'"{name}";q={amount};w={max(1, round(window))}'
        #: The start of this quota's ``RateLimit`` item: ``"name";r=``.
        self.head = f'"{name}";r='
        self.spec = spec or f"{amount} per {window:g} seconds"
        #: The amount and the window in µs as the Redis scripts take them,
        #: already bytes: redis-py then skips its per-argument encoding.
        self.wire = (str(amount).encode(), str(round(self.window * 1_000_000)).encode())
        #: The same as two RESP bulk strings, for the backend's own framing
        #: (:mod:`seawall._wire`).
        self.resp = b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in self.wire)
        # As the fixed-window script rounds it: ceil(window_us / 1000).
        self.window_ms = -(-round(self.window * 1_000_000) // 1000)
        ms = str(self.window_ms).encode()
        self.px = b"$2\r\nPX\r\n$%d\r\n%s\r\n$2\r\nNX\r\n" % (len(ms), ms)

    def scaled(self, divisor: int) -> Quota:
        """Return this quota with its amount divided by *divisor* (at least 1)."""
        return Quota(max(1, self.amount // divisor), self.window, self.name, self.spec)

    def __repr__(self) -> str:
        return f"Quota({self.amount}, {self.window:g}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quota):
            return NotImplemented
        return (self.amount, self.window, self.name) == (other.amount, other.window, other.name)

    def __hash__(self) -> int:
        return hash((self.amount, self.window, self.name))


def _items(spec: Any, where: str) -> list[RateLimitItem]:
    if isinstance(spec, RateLimitItem):
        return [spec]
    if isinstance(spec, str):
        try:
            return list(parse_many(spec))
        except ValueError:
            msg = (
                f"{where}: {spec[:60]!r} is not a limit; "
                "write e.g. '100/minute' or '10/second;1000/hour'"
            )
            raise ConfigurationError(msg) from None
    if isinstance(spec, Sequence):
        out: list[RateLimitItem] = []
        for part in spec:
            out.extend(_items(part, where))
        return out
    msg = f"{where}: expected a limit string, a list of them or a callable, got {spec!r}"
    raise ConfigurationError(msg)


def parse_quotas(spec: Any, name: str, where: str = "limit") -> tuple[Quota, ...]:
    """Compile *spec* (``"100/minute;2000/hour"``, items or a list) into quotas of policy *name*.

    A rule with one limit names its policy *name*; with several, each gets a
    ``-<window>s`` suffix so the header items stay distinct.
    """
    items = _items(spec, where)
    if not items:
        msg = f"{where}: no limit given"
        raise ConfigurationError(msg)
    quotas = []
    for item in items:
        window = float(item.get_expiry())
        label = name if len(items) == 1 else f"{name}-{window:g}s"
        quotas.append(Quota(int(item.amount), window, policy_name(label), str(item)))
    seen = {q.name for q in quotas}
    if len(seen) != len(quotas):
        msg = f"{where}: two limits with the same window in {spec!r}"
        raise ConfigurationError(msg)
    return tuple(quotas)
