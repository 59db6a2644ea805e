"""One way to talk HTTP to an outside service: explicit timeouts, TLS verification, optional client
certificate (mutual TLS), retries with backoff only for idempotent methods, and errors translated to
`connectors.errors.ConnectorError`.

Every connector builds its session here so that these rules hold everywhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from connectors.errors import ConnectorError, Failure

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class HttpSettings:
    """How to reach one service. ``verify`` is True, or the path of a CA bundle (never False in
    production); ``client_cert``/``client_key`` are file paths for mutual TLS."""

    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5  # seconds: backoff * 2**(n-1) between idempotent retries
    verify: bool | str = True
    client_cert: str | None = None
    client_key: str | None = None
    user_agent: str = "coordination-cpts/0.1"

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def session(settings: HttpSettings, headers: Mapping[str, str] | None = None) -> requests.Session:
    """A session that retries idempotent calls on connection errors, 429 and 502/503/504."""
    s = requests.Session()
    retry = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        backoff_factor=settings.backoff,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=IDEMPOTENT,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    s.verify = settings.verify
    if settings.client_cert:
        s.cert = (settings.client_cert, settings.client_key) if settings.client_key else settings.client_cert
    s.headers["User-Agent"] = settings.user_agent
    s.headers.update(headers or {})
    return s


class PinnedAdapter(HTTPAdapter):
    """Connects to the address ``resolve(host, port)`` chose (and checked) at connection time, while the
    Host header, TLS SNI and certificate verification keep the URL's name.

    Against DNS rebinding (a name that resolves to a public address when checked, then to an internal
    one when connected): there is one resolution, the checked one, and the connection goes to it.
    ``resolve`` raises to refuse. Pools are keyed by address and name, so a kept-alive connection is
    always one to a checked address.
    """

    def __init__(self, resolve: Callable[[str, int], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolve = resolve

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        found = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(found[0])
        pool_kwargs: dict[str, Any] = dict(found[1])
        name = str(host_params["host"])
        port = host_params["port"] or (443 if host_params["scheme"] == "https" else 80)
        address = self.resolve(name, int(port))
        host_params = {**host_params, "host": address, "port": port}
        if host_params["scheme"] == "https" and not _is_ip(name):
            pool_kwargs["server_hostname"] = name  # SNI
            pool_kwargs["assert_hostname"] = name  # the certificate must name the host, not the address
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        if "Host" not in request.headers and request.url:
            request.headers["Host"] = urlsplit(request.url).netloc.rpartition("@")[2]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def pinned_session(resolve: Callable[[str, int], str]) -> requests.Session:
    """A session whose every connection goes to the address ``resolve`` returns (see PinnedAdapter);
    no proxy from the environment (it would resolve the name itself), no retries (the caller's outbox
    retries)."""
    s = requests.Session()
    s.trust_env = False
    adapter = PinnedAdapter(resolve, max_retries=0)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s


def send_once(
    s: requests.Session, method: str, url: str, *, timeout: tuple[float, float], **kwargs: Any
) -> int:
    """One request for a caller that keeps its own retry schedule (rest-hook deliveries, on a
    ``pinned_session``): explicit timeouts, never redirected (a 3xx could lead past the address
    checks), the body dropped; the answer's status, whatever it is. The transport's errors
    (``requests.RequestException``, or what the session's resolver raised) go to the caller."""
    with s.request(method, url, timeout=timeout, allow_redirects=False, **kwargs) as response:
        return response.status_code


def call(
    service: str,
    s: requests.Session,
    settings: HttpSettings,
    method: str,
    url: str,
    **kwargs: Any,
) -> requests.Response:
    """One request; a 2xx/3xx response, or ConnectorError (4xx REFUSED, 5xx/429 UNAVAILABLE…).

    Non-idempotent methods (POST) are sent once: the caller's outbox decides about retrying them.
    """
    kwargs.setdefault("timeout", settings.timeout)
    # Per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's CA path.
    kwargs.setdefault("verify", settings.verify)
    kwargs.setdefault("allow_redirects", False)
    try:
        response = s.request(method, url, **kwargs)
    except requests.Timeout as exc:
        raise ConnectorError(service, Failure.TIMEOUT, f"{method} timed out ({type(exc).__name__})") from exc
    except requests.exceptions.SSLError as exc:
        raise ConnectorError(service, Failure.UNAVAILABLE, "TLS handshake failed") from exc
    except requests.RequestException as exc:
        if _retried_timeouts(exc):
            raise ConnectorError(service, Failure.TIMEOUT, f"{method} timed out (after retries)") from exc
        raise ConnectorError(service, Failure.UNAVAILABLE, f"{method} failed ({type(exc).__name__})") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        response.close()
        raise ConnectorError(service, Failure.UNAVAILABLE, f"answered HTTP {status}", status=status)
    if status >= 400:
        try:
            body = response.content[:4096]
        except requests.RequestException:  # the refusal stands without its body
            body = b""
        response.close()
        raise ConnectorError(service, Failure.REFUSED, f"answered HTTP {status}", status=status, body=body)
    return response


def probe(service: str, s: requests.Session, settings: HttpSettings, url: str) -> str:
    """A cheap proof that ``url`` is reachable as configured (``coordination connectors check``): one
    HEAD, sent once, through the session's TLS settings (CA, client certificate). Any HTTP answer but a
    5xx (501, a HEAD the server does not implement, is an answer) means the TCP connection, the TLS
    handshake and our certificate were accepted; returns what was seen, else ConnectorError."""
    try:
        response = s.request(
            "HEAD", url, timeout=settings.timeout, verify=settings.verify, allow_redirects=False
        )
    except requests.Timeout as exc:
        raise ConnectorError(service, Failure.TIMEOUT, "timed out") from exc
    except requests.exceptions.SSLError as exc:
        raise ConnectorError(
            service, Failure.UNAVAILABLE, f"TLS handshake failed ({_ssl_reason(exc)})"
        ) from exc
    except requests.RequestException as exc:
        raise ConnectorError(service, Failure.UNAVAILABLE, f"cannot connect ({type(exc).__name__})") from exc
    status = response.status_code
    response.close()
    if status >= 500 and status != 501:
        raise ConnectorError(service, Failure.UNAVAILABLE, f"answered HTTP {status}", status=status)
    tls = "TLS" if url.lower().startswith("https:") else "plain HTTP"
    return f"{tls}, HEAD answered {status}"


def _ssl_reason(exc: BaseException) -> str:
    """The innermost ssl reason (e.g. CERTIFICATE_VERIFY_FAILED), never a whole traceback text."""
    seen: BaseException | None = exc
    while seen is not None:
        reason = getattr(seen, "reason", None)
        if isinstance(reason, str) and reason.isupper():
            return reason
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = inner or seen.__cause__ or seen.__context__
    return type(exc).__name__


def _retried_timeouts(exc: requests.RequestException) -> bool:
    """urllib3 retried read timeouts, then requests reports a ConnectionError (MaxRetryError): still a
    timeout for our callers (504, not 502). Its NewConnectionError (refused, DNS) derives from
    ConnectTimeoutError but is no timeout."""
    if not isinstance(exc, requests.ConnectionError) or not exc.args:
        return False
    reason = getattr(exc.args[0], "reason", None)
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return False
    return isinstance(reason, urllib3.exceptions.TimeoutError)


def json_body(service: str, response: requests.Response) -> Any:
    """The JSON of a response, or BAD_ANSWER."""
    try:
        return response.json()
    except ValueError as exc:
        raise ConnectorError(service, Failure.BAD_ANSWER, "answer is not JSON") from exc
