"""Which network addresses a download may connect to.

A download starts at the URL the user wrote, but a server can redirect it anywhere, and a
search engine's results can point anywhere. Followed blindly, that reaches the cloud's
metadata service (credentials of the machine), or a service on the user's own machine or
network that was never meant to be reachable from outside (server-side request forgery).
So every address is sorted into a kind, and ``address_refusal`` is the whole policy:

- link-local (169.254.0.0/16, fe80::/10), the cloud metadata addresses, multicast and
  reserved addresses: never; a dataset is never served from there;
- loopback (127.0.0.0/8, ::1, and 0.0.0.0, which reaches the local machine): only when the
  user's own URL was on loopback (tests and local mirrors on 127.0.0.1 redirect there);
- private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 and the other non-global
  ranges): only when the user's URL was on loopback or private (a mirror on the LAN);
- public: always.

IPv6 forms that carry an IPv4 address (::ffff:a.b.c.d, 6to4, NAT64) are judged by that
IPv4 address, so 169.254.169.254 cannot be reached by spelling it differently.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK, PRIVATE, PUBLIC = "loopback", "private", "public"
# How far each kind of origin reaches: an origin may lead to its own kind and the wider ones.
REACH = {LOOPBACK: (LOOPBACK, PRIVATE, PUBLIC), PRIVATE: (PRIVATE, PUBLIC), PUBLIC: (PUBLIC,)}
# Instance metadata services (AWS, GCP and Azure IMDS, AWS ECS and IPv6 IMDS, Alibaba, Azure
# wireserver, Oracle): the ones outside link-local are listed because they are not caught
# by it.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
        "192.0.0.192",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SCHEMES = ("http", "https")


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for, if it carries one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address.sixtofour:
            return address.sixtofour
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_kind(address: str | IPAddress) -> str:
    """``loopback``, ``private`` or ``public``, or why no download may connect there."""
    ip = _embedded_ipv4(ipaddress.ip_address(address))
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_loopback or ip.is_unspecified:
        return LOOPBACK
    if ip.is_reserved:
        return "a reserved address"
    return PUBLIC if ip.is_global else PRIVATE


def address_refusal(address: str | IPAddress, origin: str | None) -> str | None:
    """Why ``address`` may not be connected to (to follow the address: "is a link-local
    address; ..."), or None if it may.

    ``origin`` is the kind (``loopback``, ``private``, ``public``) of the user's own URL, or
    None when ``address`` is that URL's own address: the user may point at their own machine
    or network, a redirect or a search result may not lead there.
    """
    kind = address_kind(address)
    if kind not in REACH:
        return f"is {kind}; a download never needs one"
    if origin is None or kind in REACH[origin]:
        return None
    return f"is a {kind} address, and the URL given was on a {origin} one"


def widest_origin(addresses: list[str]) -> str:
    """The kind of a URL at these addresses; the nearest one counts, since any may be used."""
    kinds = [address_kind(a) for a in addresses]
    for kind in (LOOPBACK, PRIVATE):
        if kind in kinds:
            return kind
    return PUBLIC


class TargetRefused(Exception):
    """A URL that no download may connect to: the reason says why, for people."""


class NameNotFound(Exception):
    """A host name that does not resolve; ``transient`` when the resolver may recover."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the same lookup a connection makes)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def target_addresses(url: str) -> list[str]:
    """The addresses ``url`` would connect to; ``TargetRefused`` for a URL no download reads.

    Raises ``NameNotFound`` when the host does not resolve.
    """
    try:
        parts = urlsplit(url)
    except ValueError as err:  # an unclosed IPv6 bracket, say
        raise TargetRefused(f"it is not a valid URL ({err})") from None
    if parts.scheme.lower() not in SCHEMES:
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise TargetRefused(f"it is {scheme}, and a download reads only http:// and https://")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:  # a port that is not a number
        raise TargetRefused(f"it is not a valid URL ({err})") from None
    if not host:
        raise TargetRefused("it names no host")
    try:
        return [str(ipaddress.ip_address(host.split("%")[0]))]
    except ValueError:
        pass
    try:
        return resolve(host, port)
    except UnicodeError:
        raise TargetRefused(f"its host name {host!r} is not a valid name") from None
    except socket.gaierror as err:
        transient = err.errno == socket.EAI_AGAIN
        raise NameNotFound(f"the host name {host!r} does not resolve ({err})", transient) from None


def check_target(url: str, origin: str | None) -> list[str]:
    """The addresses of ``url`` after checking each against the policy; refused if any fails.

    Every address counts, not only the first: a connection may use any of them.
    """
    addresses = target_addresses(url)
    host = urlsplit(url).hostname  # valid: target_addresses read it
    for address in addresses:
        reason = address_refusal(address, origin)
        if reason:
            where = address if host == address else f"{host} resolves to {address}, which"
            raise TargetRefused(f"{where} {reason}")
    return addresses
