"""Client identity: who is asking, as every layer sees it.

Theory of operation:

1. With no trusted proxy (the default) the client is the socket peer and no
   forwarding header is read: nothing a client sends can change its key.
2. When the peer is a trusted proxy, the forwarding chain is read right to
   left (RFC 7239 ``Forwarded: for=``, or every ``X-Forwarded-For`` line
   joined), trusted hops are skipped, and the first untrusted address is
   the client. With ``trusted_hops=N`` the peer is the first of the N hops.
   A malformed element fails closed to the peer, and so do the two headers
   when both are sent and name different clients: most proxies add to one
   and pass the other on as the client wrote it. ``X-Real-IP`` is never read.
3. IPv4-mapped IPv6 addresses are IPv4; an IPv6 client is keyed by its /64
   (configurable), since one host usually owns the whole /64.
4. A request with no IP peer (a unix socket, a test client) is keyed
   ``"unknown"`` and still runs through every layer; list ``"unix"`` in the
   trusted proxies to read forwarding headers on such connections.
5. The first requests whose client is resolved are also looked at for a
   proxy set-up that does not match these settings (:meth:`ClientResolver.probe`):
   forwarding headers from a peer nothing trusts (a proxy left out of
   ``trusted_proxies``: every client behind it would share one identity),
   or a peer the server already rewrote from them (uvicorn's
   ``--proxy-headers``, werkzeug's ``ProxyFix``) while seawall is told to
   read them too. Each is logged once, as a warning; nothing changes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from seawall._log import logger
from seawall.exceptions import ConfigurationError

if TYPE_CHECKING:
    from seawall._core.request import RequestView

__all__ = ["UNKNOWN_CLIENT", "ClientResolver", "normalize_address"]

UNKNOWN_CLIENT = "unknown"

#: How many resolutions :meth:`ClientResolver.probe` looks at: a proxy set-up
#: shows on every request it handles, so the first ones tell.
PROBES = 1000
_FORWARDING_RAW = frozenset({b"forwarded", b"x-forwarded-for"})

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(value: str) -> _IPAddress | None:
    value = value.strip()
    if not value:
        return None
    if value.startswith("["):  # [v6]:port or [v6]
        end = value.find("]")
        if end < 0:
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    if "%" in value:  # zone index never identifies a client
        value = value.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# A canonical dotted quad is already its own normal form. Checked inside the
# cache, so a repeat peer still costs one cache hit, and a new one (a flood of
# distinct IPv4 peers overflows the cache) skips the ipaddress parse (4-5 µs).
# [0-9], not \d: \d matches non-ASCII digits.
_CANONICAL_V4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
).fullmatch


@lru_cache(maxsize=8192)
def normalize_address(value: str) -> str | None:
    """Return the canonical text of an IP address (mapped IPv6 to IPv4), or ``None``."""
    if _CANONICAL_V4(value) is not None:
        return value
    addr = _parse(value)
    return None if addr is None else str(addr)


def _in_chain(peer: str | None, chain: str) -> bool:
    """Whether the address *peer* is one of the ``X-Forwarded-For`` entries in *chain*.

    A client port of 0 alone is what a server's rewrite looks like, but test
    clients use it too (Django's ``AsyncClient``); a rewritten peer also came
    from the chain.
    """
    target = None if peer is None else normalize_address(peer)
    if target is None:
        return False
    return any(str(addr) == target for addr in map(_parse, chain.split(",")) if addr is not None)


def _forwarded_for(lines: list[str]) -> list[str] | None:
    """The ``for=`` of every element of RFC 7239 ``Forwarded`` *lines*; ``None`` if one has none."""
    out: list[str] = []
    for element in ",".join(lines).split(","):
        found = None
        for pair in element.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name.strip().lower() == "for":
                found = value.strip().strip('"')
        if found is None:
            return None  # an element without for= cannot be trusted
        out.append(found)
    return out


class ClientResolver:
    """Resolve the client address and rate-limit key of a request.

    Args:
        trusted_proxies: CIDRs (``"10.0.0.0/8"``) or addresses whose forwarding
            headers are believed; ``"unix"`` trusts peers with no address.
        trusted_hops: if given, this many proxies stand in front of the app
            and are trusted whatever their address (a unix socket too): the
            peer and the right-most ``trusted_hops - 1`` entries of the chain.
            ``1``: the right-most entry is the client.
        ipv6_prefix: IPv6 clients are keyed by this network prefix length.
    """

    __slots__ = (
        "_cache",
        "_hops",
        "_nets",
        "_trust_unix",
        "_warned",
        "ipv6_prefix",
        "probes",
        "trusted_proxies",
        "trusts_any",
    )

    def __init__(
        self,
        trusted_proxies: Sequence[str] = (),
        *,
        trusted_hops: int | None = None,
        ipv6_prefix: int = 64,
    ) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [p for p in trusted_proxies.replace(",", " ").split() if p]
        nets: list[_Network] = []
        trust_unix = False
        for entry in trusted_proxies:
            if entry == "unix":
                trust_unix = True
                continue
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                msg = f"trusted_proxies: {entry!r} is not an IP address or CIDR (e.g. '10.0.0.0/8')"
                raise ConfigurationError(msg) from None
        if not 0 <= ipv6_prefix <= 128:
            msg = f"ipv6_prefix: expected 0..128, got {ipv6_prefix!r}"
            raise ConfigurationError(msg)
        if trusted_hops is not None and trusted_hops < 0:
            msg = f"trusted_hops: expected a whole number >= 0, got {trusted_hops!r}"
            raise ConfigurationError(msg)
        self.trusted_proxies = tuple(trusted_proxies)
        self.ipv6_prefix = ipv6_prefix
        self._nets = tuple(nets)
        self._trust_unix = trust_unix
        self._hops = trusted_hops
        self._cache: dict[str, str] = {}
        #: Whether any forwarding header can ever be read. False: resolve() is
        #: ``normalize_address(peer)`` (or ``"unknown"``) and reads no header.
        #: An attribute, not a property: resolve() reads it on every request,
        #: and a property call costs more than the rest of resolve().
        self.trusts_any = bool(nets) or trust_unix or bool(trusted_hops)
        #: Resolutions :meth:`probe` still looks at (0: done). Public, and a
        #: plain int, because the view tests it on every resolution.
        self.probes = PROBES
        self._warned: set[str] = set()

    def _trusted(self, addr: _IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self._nets)

    def key_for(self, address: str) -> str:
        """Return the bucket key of a normalised *address* (IPv6 grouped by prefix)."""
        if ":" not in address:
            return address
        key = self._cache.get(address)
        if key is None:
            net = ipaddress.ip_network(f"{address}/{self.ipv6_prefix}", strict=False)
            key = str(net)
            if len(self._cache) > 8192:
                self._cache.clear()
            self._cache[address] = key
        return key

    def resolve(self, peer: str | None, header: Callable[[str], list[str]]) -> str:
        """Return the client address for a request from *peer*.

        *header* returns every value of a request header (lower-case name).
        """
        peer_norm = None if peer is None else normalize_address(peer)
        if peer_norm is None:
            # No IP peer: a unix socket (some servers give its path) or a test
            # client. trusted_hops trusts the peer whatever its address.
            if not self._trust_unix and not self._hops:
                return UNKNOWN_CLIENT
            peer_addr: _IPAddress | None = None
        else:
            if not self.trusts_any:
                return peer_norm
            peer_addr = ipaddress.ip_address(peer_norm)
            if not self._hops and not self._trusted(peer_addr):
                return peer_norm
        fallback = UNKNOWN_CLIENT if peer_addr is None else str(peer_addr)
        forwarded = header("forwarded")
        xff = header("x-forwarded-for")
        if forwarded:
            client = self._walk(_forwarded_for(forwarded), fallback)
            if xff and self._walk(",".join(xff).split(","), fallback) != client:
                # Most proxies add to one of the two and pass the other on as
                # the client sent it: when they disagree, either may be forged.
                return fallback
            return client
        if xff:
            return self._walk(",".join(xff).split(","), fallback)
        return fallback

    def _walk(self, chain: list[str] | None, fallback: str) -> str:
        """The client in *chain* (right to left, past the trusted hops), else *fallback*."""
        if chain is None:
            return fallback
        # The peer is the first of the trusted hops: one proxy in front
        # (trusted_hops=1) makes the right-most entry, the address that proxy
        # saw, the client.
        hops_left = (self._hops or 1) - 1
        client = fallback
        for raw in reversed(chain):
            addr = _parse(raw)
            if addr is None:
                return fallback  # malformed: fail closed to the peer
            client = str(addr)
            if hops_left > 0:
                hops_left -= 1
                continue
            if not self._trusted(addr):
                return client
        return client

    def probe(self, view: RequestView) -> None:
        """Look at one request for a proxy set-up these settings do not match.

        Called by :attr:`RequestView.client` while :attr:`probes` is above
        zero. Logs each finding once per resolver, as a warning:

        - ``seawall.client.forwarding_ignored``: a forwarding header came from
          a peer that is not trusted, and no proxy is trusted at all. Either a
          client forged it (ignoring it is right) or the peer is a proxy
          missing from ``trusted_proxies``, and every client behind it shares
          one identity (and one rate-limit bucket).
        - ``seawall.client.already_rewritten``: the server (or a WSGI
          middleware) already took the client from the forwarding headers,
          and seawall is told to read them again. A client whose own address
          is in ``trusted_proxies`` could then pick its identity.
        """
        # Never below zero: two threads may both pass the view's test of the
        # last probe, and -1 would be true forever.
        left = self.probes - 1
        self.probes = left if left > 0 else 0
        raw = view.raw
        # The raw headers, not the view's header map: building that would
        # cost these requests more than the look itself. By the view's
        # source, not its interface: Django's views read META under ASGI too.
        raw_headers = view._raw_headers
        if raw_headers is not None:  # an ASGI scope
            forwarded = False
            lines: list[str] = []
            for name, value in raw_headers:
                if name in _FORWARDING_RAW:
                    forwarded = True
                    if name == b"x-forwarded-for":
                        lines.append(value.decode("latin-1"))
            if not forwarded:
                return
            # uvicorn's ProxyHeadersMiddleware sets the client from
            # X-Forwarded-For with port 0 when the entry has no port.
            client = raw.get("client")
            port = client[1] if client is not None and len(client) > 1 else None
            rewritten = port == 0 and _in_chain(view.peer, ",".join(lines))
        else:  # a WSGI environ, or Django's META
            xff = raw.get("HTTP_X_FORWARDED_FOR")
            if xff is None and "HTTP_FORWARDED" not in raw:
                return
            # Django's ASGI handler copies the scope's client port (an int)
            # into REMOTE_PORT; WSGI servers give a string.
            rewritten = "werkzeug.proxy_fix.orig" in raw or (
                raw.get("REMOTE_PORT") == 0 and _in_chain(view.peer, xff or "")
            )
        if rewritten:
            if self.trusts_any:
                self._warn(
                    "seawall.client.already_rewritten",
                    "the server already took the client from the forwarding headers "
                    "(uvicorn --proxy-headers, werkzeug ProxyFix); seawall reads them "
                    "again because trusted_proxies/trusted_hops are set. Configure one "
                    "of the two: leave trusted_proxies empty, or turn the server's off",
                    peer=view.peer,
                )
        elif not self.trusts_any:
            self._warn(
                "seawall.client.forwarding_ignored",
                "a forwarding header came from a peer seawall does not trust, so the "
                "peer is the client. If it is your proxy or load balancer, list it in "
                "trusted_proxies: otherwise every client behind it shares one identity "
                "and one rate-limit bucket",
                peer=view.peer,
            )

    def _warn(self, event: str, advice: str, **fields: object) -> None:
        if event in self._warned:
            return
        self._warned.add(event)
        if len(self._warned) == 2:
            self.probes = 0
        logger.warning(event, advice=advice, **fields)
