"""The webhook owns its serving certificate (no cert-manager needed), as vault-k8s and istiod do.

The API server calls the webhook over HTTPS and trusts only the ``caBundle`` of the webhook
configurations. The chart renders neither key material nor a caBundle, so two renders of the same
values are byte-identical and GitOps tools see no drift. It renders the Secret empty (type
``Opaque``, no data), and every webhook replica fills and reconciles it at start and then every
``interval`` seconds:

- ``tls.crt``/``tls.key``: the serving certificate, for the Service's DNS names;
- ``ca.crt``: the trust bundle, exactly what both configurations' caBundle hold (one CA, two
  during a rotation);
- ``next.crt``/``next.key``: only during a rotation, the successor signed by the newest CA;
- annotation ``sandgate.dev/tls-changed-at``: when the bundle or the served certificate changed.

The webhook never creates the Secret: Kubernetes cannot limit ``create`` to one name, and a
webhook allowed to create Secrets in the release namespace could forge Helm's release records
there (red team 31); the chart's ValidatingAdmissionPolicy holds its ``update`` to the certificate
keys and its annotation (Helm finds its records by label alone: red team 32). A missing Secret is
an error it reports (every pass) while it goes on serving what it has; ``helm upgrade`` puts the
Secret back. Its writes keep the Secret's type, labels and annotations (Helm's), changing only
the data and its own annotation; replicas race with the resourceVersion, and the loser of the 409
plans again from the winner's. A certificate is renewed when a third of its validity is left, in
three steps so that no handshake fails in between; each step waits ``settle`` (longer than every
replica's check interval plus the API servers' caBundle propagation):

1. prepare: a new CA and successor; ca.crt = old + new CA; caBundle patched. Replicas still serve
   the old certificate, which the bundle still trusts.
2. promote, once both configurations trust the new CA: tls.* = the successor. Replicas switch at
   their next check; the bundle trusts both.
3. trim: ca.crt = the new CA alone.

A CA's private key signs one certificate and is dropped, never stored, so every renewal is a new
CA. An emptied or damaged Secret is rebuilt from what this replica serves, through the same three
steps (emptying the Secret is how to force a new CA without failing requests); with nothing to
rebuild from (the chart's empty Secret at the first start), a fresh pair is written. A valid
Secret without the annotation (one an older chart rendered) is adopted as it is.

:func:`plan` is the pure core (state + clock -> next state); :class:`CertificateManager` is the
shell: it talks to the API through :class:`ClusterAPI` (webhook/kubeapi.py wraps the official
client), patches the two caBundles, and swaps the served pair into files that the webhook's server
reloads (an atomic symlink swap, as the kubelet does for Secret volumes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.kubeapi import KubeError, WebhookKind

__all__ = ["CertificateManager", "ClusterAPI", "InvalidSecret", "MissingSecret", "Pair", "Step", "TLSState", "Timing",
           "dns_names", "issue", "plan"]  # fmt: skip

log = logging.getLogger("sandgate.webhook.certs")

CHANGED_AT = "sandgate.dev/tls-changed-at"
TASK = "webhook-certificates"  # the Supervisor task name: sandgate_internal_errors_total{task=...}
_SKEW = dt.timedelta(hours=1)  # certificates start an hour early: API servers' clocks differ from ours
_KINDS: tuple[WebhookKind, ...] = ("mutating", "validating")


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, PEM."""

    cert: bytes
    key: bytes = dataclasses.field(repr=False)


@dataclass(frozen=True)
class TLSState:
    serving: Pair
    bundle: bytes  # PEM CA certificates
    changed_at: dt.datetime
    successor: Pair | None = None


@dataclass(frozen=True)
class Timing:
    validity: dt.timedelta = dt.timedelta(days=365)
    settle: dt.timedelta = dt.timedelta(minutes=5)

    @property
    def renew_before(self) -> dt.timedelta:
        return self.validity / 3


Action = Literal["keep", "create", "prepare", "promote", "trim", "rebuild"]


@dataclass(frozen=True)
class Step:
    action: Action
    state: TLSState
    reason: str


class InvalidSecret(ValueError):
    pass


class MissingSecret(RuntimeError):
    """The Secret the chart renders is not there: the webhook may not create it (see above)."""


def dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """What the API server (``SERVICE.NAMESPACE.svc``) and in-cluster scrapers dial."""
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")


# -- PKI -----------------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(**on: bool) -> x509.KeyUsage:
    usages = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
              "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip
    return x509.KeyUsage(**(dict.fromkeys(usages, False) | on))


def issue(names: Sequence[str], now: dt.datetime, validity: dt.timedelta) -> tuple[bytes, Pair]:
    """A new CA (PEM) and a serving certificate it signed for ``names``. The CA's key is dropped."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    # A distinct subject per CA: during a rotation two CAs sit in one bundle.
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sandgate"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"sandgate webhook CA {now:%Y-%m-%dT%H:%M:%SZ}")])  # fmt: skip
    start, end = now - _SKEW, now + validity
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[min(2, len(names) - 1)])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    return _pem(ca), Pair(_pem(leaf), key_pem)


def _cas(bundle: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(bundle)
    except ValueError:
        raise InvalidSecret("ca.crt: not a PEM bundle of CA certificates") from None


def _issuer(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def _problem(field: str, pair: Pair, cas: Sequence[x509.Certificate], names: Sequence[str], now: dt.datetime) -> str:
    """Why ``pair`` cannot be served, or ""."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert)
        key = serialization.load_pem_private_key(pair.key, password=None)
    except (ValueError, TypeError):
        return f"{field}: not a PEM certificate and key"
    if key.public_key() != cert.public_key():
        return f"{field}: the key does not belong to the certificate"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except x509.ExtensionNotFound:
        san = []
    if missing := [n for n in names if n not in san]:
        return f"{field}: the certificate does not name {', '.join(missing)}"
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        return f"{field}: the certificate is not valid now (until {cert.not_valid_after_utc:%Y-%m-%d})"
    if _issuer(cert, cas) is None:
        return f"{field}: no CA in ca.crt issued the certificate"
    return ""


def problem(state: TLSState, names: Sequence[str], now: dt.datetime) -> str:
    """Why this state cannot be served as it is, or "".

    A bundle of more than two CAs, or a change time in the future, is no state this manager
    writes: a CA added there would stay trusted for good (it is trimmed only once the change
    settles, red team 32)."""
    try:
        cas = _cas(state.bundle)
    except InvalidSecret as e:
        return str(e)
    if len(cas) > 2:
        return f"ca.crt: {len(cas)} CAs, where a renewal holds two at most"
    if state.changed_at > now + _SKEW:
        return f"metadata.annotations[{CHANGED_AT}]: in the future ({state.changed_at:%Y-%m-%dT%H:%M:%SZ})"
    found = _problem("tls.crt", state.serving, cas, names, now)
    if not found and state.successor is not None:
        found = _problem("next.crt", state.successor, cas, names, now)
    return found


# -- the Secret's wire format --------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse(secret: dict[str, Any]) -> TLSState:
    data = secret.get("data") or {}
    if not data:
        raise InvalidSecret("empty (as the chart renders it, or emptied to force a new CA)")
    annotations = (secret.get("metadata") or {}).get("annotations") or {}

    def field(key: str) -> bytes:
        try:
            return base64.b64decode(data[key], validate=True)
        except KeyError:
            raise InvalidSecret(f"data.{key}: missing") from None
        except (binascii.Error, TypeError):
            raise InvalidSecret(f"data.{key}: not base64") from None

    if CHANGED_AT not in annotations:
        # A Secret this webhook did not write (the chart used to render one): adopt a valid pair as is,
        # as settled long ago, rather than start over with a CA nobody trusts yet.
        changed = dt.datetime.min.replace(tzinfo=dt.UTC)
    else:
        try:
            changed = dt.datetime.fromisoformat(annotations[CHANGED_AT])
        except (TypeError, ValueError):
            raise InvalidSecret(f"metadata.annotations[{CHANGED_AT}]: not a time") from None
        if changed.tzinfo is None:
            raise InvalidSecret(f"metadata.annotations[{CHANGED_AT}]: no time zone")
    successor = None
    if "next.crt" in data or "next.key" in data:
        successor = Pair(field("next.crt"), field("next.key"))
    return TLSState(Pair(field("tls.crt"), field("tls.key")), field("ca.crt"), changed, successor)


def to_secret(state: TLSState, previous: dict[str, Any]) -> dict[str, Any]:
    """``previous`` with ``state`` written into it: its data and the change time, nothing else.

    An update replaces the whole object, so everything else is carried over as it was: the type
    (immutable), Helm's labels and annotations (without them ``helm upgrade`` would own the Secret
    no more), and the resourceVersion (the update is refused, 409, if another replica wrote first).
    """
    data = {"tls.crt": _b64(state.serving.cert), "tls.key": _b64(state.serving.key), "ca.crt": _b64(state.bundle)}
    if state.successor is not None:
        data |= {"next.crt": _b64(state.successor.cert), "next.key": _b64(state.successor.key)}
    metadata = dict(previous.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = dict(metadata.get("annotations") or {})
    annotations[CHANGED_AT] = state.changed_at.astimezone(dt.UTC).isoformat(timespec="seconds")
    metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": previous.get("type") or "Opaque",
            "data": data}  # fmt: skip


# -- the pure core -------------------------------------------------------------------------------


def _rotate_from(state: TLSState, names: Sequence[str], now: dt.datetime, timing: Timing) -> TLSState:
    if state.successor is not None:
        return dataclasses.replace(state, changed_at=now)  # already mid-rotation: carry on from here
    ca, successor = issue(names, now, timing.validity)
    # The CA of the served certificate and the new one: nothing else of the old bundle is carried on.
    issuer = _issuer(x509.load_pem_x509_certificate(state.serving.cert), _cas(state.bundle))
    assert issuer is not None  # problem() checked it
    return TLSState(state.serving, _pem(issuer) + ca, now, successor)


def plan(
    current: TLSState | None,
    *,
    names: Sequence[str],
    now: dt.datetime,
    timing: Timing,
    trusted: Sequence[bytes] = (),
    remembered: TLSState | None = None,
    damage: str = "",
) -> Step:
    """The next state of the Secret.

    ``current`` is what the Secret holds (None: missing or unreadable, ``damage`` says why),
    ``trusted`` the caBundle of every webhook in both configurations, ``remembered`` the last good
    state this replica served (rebuilding from it keeps every replica's certificate trusted).
    """
    if current is not None and not damage:
        damage = problem(current, names, now)
    if current is None or damage:
        why = damage or "the Secret does not exist"
        if remembered is not None and not problem(remembered, names, now):
            return Step("rebuild", _rotate_from(remembered, names, now, timing), why)
        ca, pair = issue(names, now, timing.validity)
        return Step("create", TLSState(pair, ca, now), why)

    settled = now - current.changed_at >= timing.settle
    cas = _cas(current.bundle)
    if current.successor is not None:
        new_ca = _issuer(x509.load_pem_x509_certificate(current.successor.cert), cas)
        assert new_ca is not None  # problem() checked it
        everywhere = bool(trusted) and all(new_ca in _trusted_cas(b) for b in trusted)
        if settled and everywhere:
            return Step("promote", TLSState(current.successor, current.bundle, now), "the new CA is trusted")
        return Step("keep", current, "waiting for the new CA to be trusted everywhere")
    serving = x509.load_pem_x509_certificate(current.serving.cert)
    issuer = _issuer(serving, cas)
    assert issuer is not None
    if len(cas) > 1:
        if settled:
            return Step(
                "trim", TLSState(current.serving, _pem(issuer), now), "every replica serves the new certificate"
            )
        return Step("keep", current, "waiting for every replica to serve the new certificate")
    expires = min(serving.not_valid_after_utc, issuer.not_valid_after_utc)
    if expires - now <= timing.renew_before:
        return Step("prepare", _rotate_from(current, names, now, timing), f"the certificate expires {expires:%Y-%m-%d}")
    return Step("keep", current, "valid")


def _trusted_cas(bundle: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(bundle)
    except ValueError:
        return []


# -- the shell -----------------------------------------------------------------------------------


class ClusterAPI(Protocol):
    """What the manager needs from the API (webhook.kubeapi.KubeAPI); synchronous calls."""

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def replace_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def get_webhook_configuration(self, kind: WebhookKind, name: str) -> dict[str, Any]: ...
    def patch_webhook_configuration(self, kind: WebhookKind, name: str, patch: list[dict[str, Any]]) -> None: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateManager:
    def __init__(
        self,
        api: ClusterAPI,
        *,
        namespace: str,
        secret: str,
        service: str,
        webhook_configuration: str,
        cert_file: Path,
        key_file: Path,
        timing: Timing = Timing(),
        interval: float = 60.0,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        if cert_file.parent != key_file.parent or cert_file.name == key_file.name:
            raise ValueError(
                "the certificate and key files must be two files in one directory (they are swapped together)"
            )
        self.api = api
        self.namespace, self.secret, self.configuration = namespace, secret, webhook_configuration
        self.names = dns_names(service, namespace)
        self.cert_file, self.key_file = cert_file, key_file
        self.timing, self.interval, self.clock = timing, interval, clock
        self.state: TLSState | None = None  # the last good state: what this replica serves

    async def run(self) -> None:
        """Check every ``interval`` seconds, forever (run under a Supervisor: errors end the task)."""
        while True:
            await asyncio.sleep(self.interval)
            await self.reconcile()

    async def reconcile(self) -> TLSState:
        """One pass: settle the Secret, make both caBundles hold its bundle, serve its certificate."""
        for _ in range(3):
            secret = await asyncio.to_thread(self.api.get_secret, self.namespace, self.secret)
            configurations = {
                kind: await asyncio.to_thread(self.api.get_webhook_configuration, kind, self.configuration)
                for kind in _KINDS
            }
            if secret is None:
                raise MissingSecret(
                    f"secret {self.namespace}/{self.secret} does not exist: the chart renders it (empty) and the "
                    "webhook fills it, but may not create it; `helm upgrade` puts it back"
                )
            current, damage = None, ""
            try:
                current = parse(secret)
            except InvalidSecret as e:
                damage = str(e)
            trusted = [_bundle_of(w) for c in configurations.values() for w in c.get("webhooks") or []]
            step = plan(current, names=self.names, now=self.clock(), timing=self.timing, trusted=trusted,
                        remembered=self.state, damage=damage)  # fmt: skip
            if step.action == "keep":
                break
            try:
                await asyncio.to_thread(self.api.replace_secret, self.namespace, to_secret(step.state, secret))
            except KubeError as e:
                if e.status != 409:
                    raise
                # Another replica wrote first: plan again from what it wrote.
                log.info(json.dumps({"event": "tls", "action": step.action, "result": "lost_race",
                                     "secret": f"{self.namespace}/{self.secret}"}))  # fmt: skip
                continue
            self._log(step)
            break
        else:
            raise KubeError(409, f"secret {self.namespace}/{self.secret} kept changing during three attempts")
        state = step.state
        await self._trust(state.bundle, configurations)
        self._serve(state.serving)
        self.state = state
        return state

    def _log(self, step: Step) -> None:
        cert = x509.load_pem_x509_certificate((step.state.successor or step.state.serving).cert)
        log.info(json.dumps({"event": "tls", "action": step.action, "reason": step.reason,
                             "secret": f"{self.namespace}/{self.secret}", "cas": len(_cas(step.state.bundle)),
                             "notAfter": cert.not_valid_after_utc.isoformat()}))  # fmt: skip

    async def _trust(self, bundle: bytes, configurations: dict[WebhookKind, dict[str, Any]]) -> None:
        """Patch the caBundle of every webhook in both configurations that does not hold ``bundle``."""
        for kind, configuration in configurations.items():
            webhooks = configuration.get("webhooks") or []
            if all(_bundle_of(w) == bundle for w in webhooks):
                continue
            patch: list[dict[str, Any]] = []
            for i, w in enumerate(webhooks):
                # The test op pins each index to its webhook: a concurrent change is refused, not misapplied.
                patch += [{"op": "test", "path": f"/webhooks/{i}/name", "value": w.get("name")},
                          {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": _b64(bundle)}]  # fmt: skip
            await asyncio.to_thread(self.api.patch_webhook_configuration, kind, self.configuration, patch)
            log.info(json.dumps({"event": "tls", "action": "trust", "configuration": f"{kind}/{self.configuration}",
                                 "cas": len(_cas(bundle))}))  # fmt: skip

    def _serve(self, pair: Pair) -> None:
        try:
            if self.cert_file.read_bytes() == pair.cert and self.key_file.read_bytes() == pair.key:
                return
        except OSError:
            pass
        swap_files(self.cert_file.parent, {self.cert_file.name: pair.cert, self.key_file.name: pair.key})


def _bundle_of(webhook: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode((webhook.get("clientConfig") or {}).get("caBundle") or "", validate=True)
    except (binascii.Error, TypeError):
        return b""


def swap_files(directory: Path, files: dict[str, bytes]) -> None:
    """Replace ``files`` in ``directory`` at once, as the kubelet updates Secret volumes: the names are
    symlinks into ``..data``, which is switched to a new directory by one rename. A reader that
    opens the certificate and then the key never sees a new one with an old one."""
    new = Path(tempfile.mkdtemp(dir=directory, prefix="..tls-"))
    for name, content in files.items():
        fd = os.open(new / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
    data = directory / "..data"
    old = data.resolve() if data.is_symlink() else None
    tmp = directory / "..data.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(new.name)
    tmp.replace(data)
    for name in files:
        link = directory / name
        if not (link.is_symlink() and os.readlink(link) == f"..data/{name}"):
            tmp_link = directory / f"..{name}.tmp"
            tmp_link.unlink(missing_ok=True)
            tmp_link.symlink_to(f"..data/{name}")
            tmp_link.replace(link)
    if old is not None and old != new.resolve():
        for child in old.iterdir():
            child.unlink()
        old.rmdir()
