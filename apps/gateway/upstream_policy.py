"""What a provider row (apps.gateway.models.Provider, editable in the admin) may point the gateway at.

A provider names an environment variable (`api_key_env`) whose value the gateway sends as a bearer token to
its `base_url`. Unchecked, anyone who can edit a provider could have any of the server's secrets sent to any
host. Two rules, applied when a row is saved (the model's `clean()`, so the admin) and again when the gateway
loads the rows (apps.gateway.selectors), so that a row written around the admin is never used:

- `key_env_refusal`: the name must match FINOPS_UPSTREAM_KEY_ENV_ALLOWED (default `FINOPS_UPSTREAM_*_KEY`,
  `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`), and is never one of the project's own secrets, whatever that says.
- `base_url_refusal`: link-local and cloud metadata addresses never; with FINOPS_UPSTREAM_HOSTS_ALLOWED empty,
  https to any public host and http to loopback (and the mock's host) only; with it set, only the hosts it lists
  (and loopback).
  Host names are checked as written: a public name that resolves to a private address is not detected.
"""

from __future__ import annotations

import ipaddress
import socket
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from finops.conf import conf

# The project's own secrets: never an upstream key, even if an operator's pattern would match them.
DENIED_KEY_ENVS = frozenset(
    {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "FINOPS_LEDGER_DATABASE_URL",
        "FINOPS_METRICS_TOKEN",
        "FINOPS_CACHE_EMBEDDING_API_KEY",
    }
)
DENIED_KEY_ENV_PATTERNS = ("*PASSWORD*", "*DATABASE_URL", "*SECRET_KEY")
# Cloud instance metadata services by name (their addresses are link-local and refused as such).
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)


def key_env_refusal(name: str) -> str | None:
    """Why `name` may not be a provider's api_key_env (None: it may). An empty name (no key) is fine."""
    if not name:
        return None
    allowed = conf().upstream_key_env_allowed
    if name in DENIED_KEY_ENVS or any(fnmatchcase(name, pattern) for pattern in DENIED_KEY_ENV_PATTERNS):
        return f"{name} holds one of this server's own secrets; it is never sent to an upstream."
    if not any(fnmatchcase(name, pattern) for pattern in allowed):
        return (
            f"{name} is not an allowed upstream key variable: use a name matching {', '.join(allowed)} "
            "(an operator can extend FINOPS_UPSTREAM_KEY_ENV_ALLOWED)."
        )
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the legacy forms a resolver still accepts: 2852039166, 0xa9.0xfe.0xa9.0xfe, 169.254.43518
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def base_url_refusal(url: str) -> str | None:
    """Why the gateway may not call `url` with a key (None: it may)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        host = ""
    if scheme not in ("http", "https") or not host:
        return "The base URL must be an http:// or https:// URL with a host."
    if parts.username or parts.password:
        return "The base URL must not carry credentials; name the key's environment variable instead."
    address = _address(host)
    if host in METADATA_HOSTS or (
        address is not None and (address.is_link_local or address.is_unspecified or address.is_multicast)
    ):
        return f"{host} is a link-local or cloud metadata address; the gateway never sends keys there."
    loopback = host == "localhost" or host.endswith(".localhost") or (address is not None and address.is_loopback)
    mock = (urlsplit(conf().mock_llm_url).hostname or "").lower()
    if loopback or host == mock:
        return None  # a local vLLM, Ollama or the mock (FINOPS_MOCK_LLM_URL's host), over http or https
    allowed = conf().upstream_hosts_allowed
    if allowed:
        if any(fnmatchcase(host, pattern.lower()) for pattern in allowed):
            return None
        return f"{host} is not in FINOPS_UPSTREAM_HOSTS_ALLOWED."
    if scheme != "https":
        return "Use https (http is accepted for loopback hosts only, unless FINOPS_UPSTREAM_HOSTS_ALLOWED lists the host)."
    if address is not None and (address.is_private or address.is_reserved):
        return f"{host} is a private address: list it in FINOPS_UPSTREAM_HOSTS_ALLOWED to use it."
    return None
