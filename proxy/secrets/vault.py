"""Secrets from HashiCorp Vault / OpenBao, read with the sidecar's own identity.

hvac is synchronous: every call runs in a worker thread with a hard timeout, so a slow Vault never
stalls the proxy's event loop, and at that timeout the call's connections are shut down, so a Vault
that answers a byte at a time never holds the thread either (:mod:`proxy.secrets.calls`). Auth methods: a static token (``VAULT_TOKEN``), AppRole, and
Kubernetes (a projected service-account token file). Tokens are renewed before they expire;
when renewal fails or Vault answers 403, the sidecar logs in again once and retries once.

Errors become :class:`SecretError` with a reason and a message that never holds a value, a
token, or Vault's address: it says which secret and what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import requests

from proxy.infile import MAX_PEM_BYTES, read_bounded
from proxy.metrics import Metrics
from proxy.policy.model import Reason, SecretSourceRef
from proxy.secrets import FILE_READ_MAX, SecretError, read_regular_file
from proxy.secrets.calls import MAX_ANSWER, AnswerTooLarge, Call, DeadlineAdapter
from proxy.secrets.nameservers import NameserverAdapter

log = logging.getLogger("sandgate.vault")

AUTH_METHODS = ("token", "approle", "kubernetes")
_THREADS = 2  # Vault calls at once
_RELOGIN_AFTER = 5.0  # seconds: a 403 logs in again at most this often
_RENEW_LOOK = 1.0  # seconds: the renewal loop looks at the token at least this often (a login sets a new TTL)
_MAX_TTL = 10 * 365 * 86400

T = TypeVar("T")


class VaultConfigError(ValueError):
    pass


@dataclass(frozen=True)
class VaultSettings:
    addr: str
    auth: str = "token"
    token: str | None = None  # never logged, never in a repr
    namespace: str | None = None
    cacert: str | None = None
    timeout: float = 5.0
    auth_mount: str | None = None  # default: the method's name
    role: str | None = None  # AppRole role_id, or the Kubernetes auth role
    secret_id_file: str | None = None  # AppRole
    jwt_file: str | None = None  # Kubernetes: the projected service-account token
    allow_http: bool = False
    proxy: str | None = None  # an HTTP proxy Vault is reached through (CONNECT): sandgate run's relay

    def __repr__(self) -> str:
        return f"VaultSettings(addr={self.addr!r}, auth={self.auth!r}, namespace={self.namespace!r})"

    def validate(self) -> None:
        """SECURITY-CASES E09: TLS to Vault is verified, never optional by accident."""
        like = "VAULT_ADDR must be a URL like https://vault.example:8200"
        try:
            parts = urlsplit(self.addr)
            port = parts.port  # (ValueError for a port that is no port: 99999, abc)
        except ValueError as e:  # (an unclosed [ of an IPv6 address: red team 45)
            raise VaultConfigError(f"{like} ({e})") from None
        if parts.scheme not in ("https", "http") or not parts.hostname or port == 0:
            raise VaultConfigError(like)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise VaultConfigError(f"{like}: no credentials in it (they would be sent nowhere useful)")
        if parts.query or parts.fragment or "?" in self.addr or "#" in self.addr:
            raise VaultConfigError(f"{like}: no query or fragment (a path prefix is fine)")
        if parts.scheme == "http" and not self.allow_http:
            raise VaultConfigError(
                "VAULT_ADDR uses plain http: the token and the secrets would cross the network in clear text; use https"
            )
        if self.auth not in AUTH_METHODS:
            raise VaultConfigError(f"vault auth method must be one of {', '.join(AUTH_METHODS)}")
        if self.auth == "token" and not self.token:
            raise VaultConfigError("vault auth 'token' needs VAULT_TOKEN")
        if self.auth == "approle" and not (self.role and self.secret_id_file):
            raise VaultConfigError("vault auth 'approle' needs --vault-role (the role_id) and --vault-secret-id-file")
        if self.auth == "kubernetes" and not (self.role and self.jwt_file):
            raise VaultConfigError("vault auth 'kubernetes' needs --vault-role and --vault-jwt-file")
        if self.cacert:
            try:  # (said here, once: a FIFO said "no such file", a directory too)
                read_bounded(self.cacert, MAX_PEM_BYTES)
            except OSError as e:
                raise VaultConfigError(f"--vault-cacert {self.cacert}: {e.strerror or e}") from None
        if self.proxy is not None and not _plain_http_proxy(self.proxy):
            raise VaultConfigError(
                "--vault-proxy must be a URL like http://proxy.example:3128 (an HTTP proxy that tunnels "
                "with CONNECT; no credentials, no path)"
            )


def _plain_http_proxy(url: str) -> bool:
    """``http://host:port``, nothing more (a path, a query or credentials would be sent nowhere
    useful, or to the proxy in clear text)."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return False
    return (
        u.scheme == "http"
        and bool(u.hostname)
        and port is not None
        and u.path in ("", "/")
        and not (u.username or u.password or u.query or u.fragment or "@" in u.netloc)
    )


_TRANSIENT = frozenset({"unreachable", "timeout", "error"})


class _Unavailable(Exception):
    def __init__(self, result: str, message: str, reason: Reason = Reason.SECRET_UNAVAILABLE) -> None:
        super().__init__(message)
        self.result, self.reason = result, reason


class _Adapter(DeadlineAdapter, NameserverAdapter):
    """Vault's transport: names from the nameservers, each call within its deadline."""


class VaultSource:
    """A ``SecretSource`` for ``vault: {mount, path, key}`` references."""

    def __init__(self, settings: VaultSettings, metrics: Metrics) -> None:
        settings.validate()
        self.settings = settings
        self.metrics = metrics
        self._lock = threading.Lock()  # one login at a time; hvac clients are not thread-safe
        self._client: hvac.Client | None = None
        self._token_expires: float | None = None  # monotonic time; None: does not expire
        self._renew_at: float | None = None  # monotonic time of the next renewal (renew_loop)
        self._renew_failures = 0
        self._logged_in_at = -_RELOGIN_AFTER
        self._login_failure: tuple[float, str, str] | None = None  # (when, result, message) of the last failed login
        self._kv_versions: dict[str, str] = {}
        self._renewable = False
        # Vault's own threads, not the loop's default pool, which the policy watcher and the file
        # sources need (red team 29: six trickled reads stopped hot reload). A call is ended at its
        # timeout (see _call), so none is held for longer; and a call waits for a thread before its
        # timeout starts (a refresh asks for every secret at once: red team 35 saw the last of 30
        # time out in the queue, every refresh, behind a Vault answering each in 0.4 s).
        self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="sandgate-vault")
        self._slots = asyncio.Semaphore(_THREADS)

    # -- the SecretSource interface ---------------------------------------------------------------
    async def fetch(self, ref: SecretSourceRef) -> str:
        start = time.monotonic()
        result = "success"
        try:
            return await self._call(self._read, ref)
        except TimeoutError:
            result = "timeout"
            raise SecretError(
                Reason.SECRET_UNAVAILABLE, f"vault did not answer within {self.settings.timeout:g} s", transient=True
            ) from None
        except _Unavailable as e:
            result = e.result
            raise SecretError(e.reason, str(e), transient=e.result in _TRANSIENT) from None
        except (hvac.exceptions.VaultError, requests.RequestException, OSError) as e:
            # Anywhere else it can fail (a login, a name that does not resolve): never out of here.
            result = _result_of(e)
            raise SecretError(
                Reason.SECRET_UNAVAILABLE, f"vault {self.settings.auth} access failed: {_describe(e)}", transient=True
            ) from None
        except Exception as e:
            # An answer of a shape no Vault gives (a 204 to a read, a body that is no JSON object,
            # a field of the wrong type, JSON nested past the parser's depth): hvac hands such
            # answers on as they are, and reading them fails anywhere. Counted as an error.
            result = "error"
            raise SecretError(
                Reason.SECRET_UNAVAILABLE,
                f"reading {ref.describe()} failed: an answer of an unexpected shape from vault ({type(e).__name__})",
                transient=True,
            ) from None
        finally:
            self.metrics.vault_requests.labels(result).inc()
            self.metrics.vault_duration.observe(time.monotonic() - start)

    async def renew_loop(self) -> None:
        """Keep the token alive: renew at two thirds of its TTL, log in again when that fails.
        The loop looks again every second, so a login meanwhile (a new TTL) is seen; after a
        failure it waits 1, 2, 4 ... up to 60 s before the next try."""
        while True:
            renew_at = self._renew_at
            if renew_at is None or not self._renewable:
                # A token without a TTL (e.g. root) needs no renewal; a non-renewable one is replaced
                # by a fresh login when it expires (see _client_now).
                await asyncio.sleep(_RENEW_LOOK)
                continue
            wait = renew_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, _RENEW_LOOK))
                continue
            try:
                await self._call(self._renew)
            except Exception as e:  # any failure: the next read logs in again
                self._renew_failures += 1
                self._renew_at = time.monotonic() + min(60.0, 2.0 ** (self._renew_failures - 1))
                log.warning('{"event": "vault_renew", "result": "error", "detail": %s}', _quote(_renew_failure(e)))
                continue
            self._renew_failures = 0
            if self._renew_at is not None and self._renew_at <= time.monotonic():
                self._renew_at = time.monotonic() + 1.0  # (nothing was renewed: never a busy loop)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a Vault thread, within the timeout, all of it: when the timeout passes
        (or the caller is cancelled), the connections the call is using are shut down, which ends
        it in its thread too (a byte every few seconds satisfies each read's own timeout)."""
        call = Call()
        loop = asyncio.get_running_loop()
        async with self._slots:
            try:
                return await asyncio.wait_for(
                    loop.run_in_executor(self._pool, call.run, fn, *args), self.settings.timeout
                )
            finally:
                call.expire()  # (a call that has returned: nothing to do)

    # -- blocking internals (worker threads) --------------------------------------------------------
    def _new_client(self) -> hvac.Client:
        s = self.settings
        verify: bool | str = s.cacert or True
        session = requests.Session()
        session.verify = verify  # hvac sets this only on sessions it makes itself
        # Where the token goes and whom it trusts are this client's flags alone: not HTTPS_PROXY,
        # ALL_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE or ~/.netrc of whatever environment it runs in.
        session.trust_env = False
        session.headers["Accept-Encoding"] = "identity"  # (nothing to inflate: answers are bounded as sent)
        if s.proxy is not None:
            session.proxies = {"https": s.proxy, "http": s.proxy}
        # A redirect is never followed: requests would send X-Vault-Token (or a login's secret_id)
        # along, to another host, over plain http too (red team 29).
        session.max_redirects = 0
        # Names resolve through the nameservers, never the pod's shared /etc/hosts.
        adapter = _Adapter(s.timeout, proxied=s.proxy is not None)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # token="": hvac would otherwise take VAULT_TOKEN or ~/.vault-token (a FIFO there hung the
        # login for good) and send it along with an AppRole or Kubernetes login.
        return hvac.Client(
            url=s.addr, token="", verify=verify, namespace=s.namespace, timeout=s.timeout, session=session
        )

    def _login(self) -> hvac.Client:
        s = self.settings
        client = self._new_client()
        credential_file = {"approle": s.secret_id_file, "kubernetes": s.jwt_file}.get(s.auth)
        try:
            # A regular file, read up to a bound: a FIFO blocked the thread (and the lock) for good,
            # /dev/zero filled the memory (red team 36).
            credential = read_regular_file(credential_file).strip() if credential_file else ""
        except OSError as e:
            raise _Unavailable("auth_error", f"cannot read the {s.auth} credential file: {e.strerror}") from None
        if len(credential) > FILE_READ_MAX:
            raise _Unavailable("auth_error", f"the {s.auth} credential file is larger than {FILE_READ_MAX} bytes")
        try:
            if s.auth == "token":
                client.token = s.token
                try:
                    auth = client.auth.token.lookup_self()["data"]
                    auth["lease_duration"] = auth.get("ttl")
                except hvac.exceptions.Forbidden:
                    # A token without the default policy may read its secrets and not itself (red
                    # team 36): used as it is, never renewed. (A revoked one fails its reads, 403.)
                    log.warning('{"event": "vault_token_lookup", "result": "forbidden", "detail": '
                                '"the token may not look itself up (or it expired or was revoked: then its reads '
                                'fail, 403): it is used as it is, never renewed"}')  # fmt: skip
                    auth = {}
            elif s.auth == "approle":
                auth = client.auth.approle.login(s.role, credential, mount_point=s.auth_mount or "approle")["auth"]
            else:
                mount = s.auth_mount or "kubernetes"
                auth = client.auth.kubernetes.login(s.role, credential, mount_point=mount)["auth"]
            ttl, renewable = _ttl(auth.get("lease_duration")), auth.get("renewable") is True
        except hvac.exceptions.Forbidden:
            raise _Unavailable("auth_error", f"vault refused the {s.auth} login (403)") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as e:
            raise _Unavailable(_result_of(e), f"vault {s.auth} login failed: {_describe(e)}") from None
        self._set_ttl(ttl)
        self._renewable = renewable
        self._client = client
        self._logged_in_at = time.monotonic()
        self._login_failure = None
        log.info('{"event": "vault_login", "result": "success", "auth": %s}', _quote(s.auth))
        return client

    def _set_ttl(self, ttl: int) -> None:
        now = time.monotonic()
        self._token_expires = now + ttl if ttl else None
        self._renew_at = now + max(0.5, ttl * 2 / 3) if ttl else None

    def _client_now(self) -> hvac.Client:
        """The client, logged in; a login that failed is not tried again for a few seconds (every
        secret of every refresh logged in again: 60 logins for 20 secrets in 3 refreshes, each
        perhaps a new token, red team 36): its failure is the answer meanwhile."""
        with self._lock:
            if self._client is not None and (self._token_expires is None or time.monotonic() < self._token_expires):
                return self._client
            now = time.monotonic()
            if self._login_failure is not None and now - self._login_failure[0] < _RELOGIN_AFTER:
                raise _Unavailable(*self._login_failure[1:])
            try:
                return self._login()
            except _Unavailable as e:
                self._login_failure = (now, e.result, str(e))
                raise
            except Exception as e:
                self._login_failure = (
                    now, "error", f"vault {self.settings.auth} login failed: an answer of an unexpected shape "
                    f"({type(e).__name__})")  # fmt: skip
                raise

    def _renew(self) -> None:
        with self._lock:
            client = self._client
            if client is None:
                return
            try:
                ttl = _ttl(client.auth.token.renew_self()["auth"].get("lease_duration"))
                if not ttl:  # (a token renewed has a TTL: none would have ended renewal for good)
                    raise _Unavailable("error", "vault's renewal answer has no TTL")
                self._set_ttl(ttl)
                log.info('{"event": "vault_renew", "result": "success"}')
            except (hvac.exceptions.VaultError, requests.RequestException):
                if self.settings.auth == "token":
                    raise  # a static token cannot be replaced; reads fail closed until it works again
                self._login()

    def _read(self, ref: SecretSourceRef) -> str:
        client = self._client_now()
        try:
            return self._read_with(client, ref)
        except hvac.exceptions.Forbidden:
            if self.settings.auth == "token":
                raise _Unavailable("forbidden", f"vault denied reading {ref.describe()} (403)") from None
            # The token may have been revoked: one fresh login, one retry (E03). Not for every
            # secret of every refresh when the role may not read them (a new token each, never
            # revoked: red team 35 counted 101 logins in 10 s): at most one login every few seconds.
            with self._lock:
                if self._client is not client and self._client is not None:
                    client = self._client  # (another read logged in meanwhile)
                elif time.monotonic() - self._logged_in_at >= _RELOGIN_AFTER:
                    client = self._login()
                else:
                    raise _Unavailable("forbidden", f"vault denied reading {ref.describe()} (403)") from None
            try:
                return self._read_with(client, ref)
            except hvac.exceptions.Forbidden:
                raise _Unavailable("forbidden", f"vault denied reading {ref.describe()} (403)") from None

    def _read_with(self, client: hvac.Client, ref: SecretSourceRef, again: bool = True) -> str:
        assert ref.vault_mount is not None and ref.vault_path is not None and ref.vault_key is not None
        try:
            version = self._kv_version(client, ref.vault_mount)
            if version == "1":
                data = client.secrets.kv.v1.read_secret(ref.vault_path, mount_point=ref.vault_mount)["data"]
            else:
                resp = client.secrets.kv.v2.read_secret_version(
                    ref.vault_path, mount_point=ref.vault_mount, raise_on_deleted_version=False
                )
                data = resp["data"]["data"]
                if data is None:  # 200 with data: null: the latest version is deleted or destroyed
                    meta = resp["data"].get("metadata") or {}
                    state = "destroyed" if meta.get("destroyed") else "deleted"
                    raise _Unavailable("not_found", f"the latest version of {ref.describe()} is {state}")
        except hvac.exceptions.InvalidPath as e:
            # The mount's version may have been a guess, or changed since it was asked (kv
            # enable-versioning): ask again, and read once more if it is another.
            self._kv_versions.pop(ref.vault_mount, None)
            if again and self._kv_version(client, ref.vault_mount) != version:
                return self._read_with(client, ref, again=False)
            # A destroyed latest version answers 404 with the version's metadata in the body.
            meta = ((getattr(e, "json", None) or {}).get("data") or {}).get("metadata") or {}
            if meta.get("destroyed"):
                raise _Unavailable("not_found", f"the latest version of {ref.describe()} is destroyed") from None
            if meta.get("deletion_time"):
                raise _Unavailable("not_found", f"the latest version of {ref.describe()} is deleted") from None
            raise _Unavailable("not_found", f"{ref.describe()} does not exist") from None
        except hvac.exceptions.Forbidden:
            raise
        except (hvac.exceptions.VaultError, requests.RequestException) as e:
            raise _Unavailable(_result_of(e), f"reading {ref.describe()} failed: {_describe(e)}") from None
        if ref.vault_key not in data:
            raise _Unavailable("not_found", f"{ref.describe()}: the secret has no key {ref.vault_key!r}")
        value = data[ref.vault_key]
        if not isinstance(value, str):
            raise _Unavailable(
                "invalid",
                f"{ref.describe()}: the value is a {type(value).__name__}, not a string",
                Reason.SECRET_INVALID,
            )
        return value

    def _kv_version(self, client: hvac.Client, mount: str) -> str:
        """The mount's KV version ("1" or "2"), as Vault describes the mount. Remembered only when
        Vault said it; when it cannot tell (sealed, 403, an answer of another shape), "2" (the
        cluster default) for this read, and asked again the next time (red team 35: one 503 made
        a v1 mount v2 until a restart)."""
        known = self._kv_versions.get(mount)
        if known is not None:
            return known
        try:
            info = client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
        except hvac.exceptions.VaultError:
            return "2"
        version = _kv_version_of(info)
        if version is None:
            return "2"
        self._kv_versions[mount] = version
        return version


def _kv_version_of(info: object) -> str | None:
    """The KV version in an answer of ``sys/internal/ui/mounts/<mount>``: ``options.version``,
    "1" when the mount has no options (``kv`` enabled without ``-version``: ``options: null``);
    None when the answer is not such a description."""
    data = info.get("data") if isinstance(info, dict) else None
    if not isinstance(data, dict):
        return None
    options = data.get("options")
    if options is None:
        return "1"
    if not isinstance(options, dict):
        return None
    version = options.get("version")
    if version in (None, "", "1", 1):
        return "1"
    if version in ("2", 2):
        return "2"
    return None


def _ttl(value: object) -> int:
    """A token's TTL from Vault's answer, in seconds (0: does not expire). Anything else than a
    whole number from 0 to ten years is an answer of an unexpected shape (a TTL of 1e18 slept the
    renewal for good)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TTL:
        raise _Unavailable("error", "vault answered a token TTL that is not a number of seconds")
    return value


def _result_of(e: Exception) -> str:
    if isinstance(e, AnswerTooLarge):
        return "error"  # (Vault answered: not "unreachable")
    if isinstance(e, requests.Timeout):
        return "timeout"
    if isinstance(e, requests.RequestException | OSError):
        return "unreachable"
    if isinstance(e, hvac.exceptions.Forbidden):
        return "forbidden"
    return "error"


def _renew_failure(e: Exception) -> str:
    """Words about a failed renewal (never an exception's text, nor our own class's name: red team
    57 saw ``_Unavailable`` in the log)."""
    if isinstance(e, _Unavailable):
        return str(e)
    if isinstance(e, TimeoutError):
        return "vault did not answer the renewal in time"
    return _describe(e)


def _describe(e: Exception) -> str:
    """Words about the failure, never its text: hvac and requests messages carry URLs."""
    if isinstance(e, AnswerTooLarge):
        return f"vault's answer was longer than {MAX_ANSWER} bytes"
    if isinstance(e, requests.TooManyRedirects):
        return "vault answered with a redirect, which is never followed (the token would go along): point VAULT_ADDR at the node that answers"
    if isinstance(e, requests.exceptions.SSLError):
        return "TLS verification failed"
    if isinstance(e, requests.Timeout):
        return "timed out"
    if isinstance(e, requests.ConnectionError):
        return "vault unreachable"
    if isinstance(e, hvac.exceptions.VaultError):
        return f"vault answered {type(e).__name__}"
    return type(e).__name__


def _quote(s: str) -> str:
    import json

    return json.dumps(s)


def settings_from(args: Any, environ: dict[str, str]) -> VaultSettings | None:
    """Vault settings from CLI flags, falling back to the usual VAULT_* environment variables."""
    addr = args.vault_addr or environ.get("VAULT_ADDR")
    if not addr:
        return None
    return VaultSettings(
        addr=addr,
        auth=args.vault_auth,
        token=environ.get("VAULT_TOKEN"),
        namespace=args.vault_namespace or environ.get("VAULT_NAMESPACE"),
        cacert=args.vault_cacert or environ.get("VAULT_CACERT"),
        timeout=args.vault_timeout,
        auth_mount=args.vault_auth_mount,
        role=args.vault_role or (environ.get("VAULT_ROLE_ID") if args.vault_auth == "approle" else None),
        secret_id_file=args.vault_secret_id_file,
        jwt_file=args.vault_jwt_file,
        allow_http=args.vault_allow_http,
        proxy=args.vault_proxy,
    )
