"""The per-sidecar interception CA: EC P-256 (cheaper handshakes than RSA), made at start.

The key stays in ``<confdir>/ca-key.pem`` (mode 0600, read by the data path's leaf minting); agents
only ever get ``<confdir>/ca.crt``, the certificate alone.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_KEY_FILE = "ca-key.pem"  # the CA's key and certificate; never leaves the confdir
CA_CERT_FILE = "ca.crt"


class CaError(Exception):
    """The confdir or an existing CA key cannot be trusted; the message says why and what to do."""


def _check_ours(path: Path, what: str, *, private: bool) -> None:
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise CaError(f"{what} {path} belongs to uid {st.st_uid}, not to us: choose another --confdir")
    loose = st.st_mode & (0o077 if private else 0o022)
    if loose:
        raise CaError(
            f"{what} {path} is {'group/world accessible' if private else 'group/world writable'} "
            f"(mode {st.st_mode & 0o777:o}): choose another --confdir"
        )


def ensure_ca(confdir: Path, common_name: str = "Sandgate sidecar CA", *, private: bool = False) -> None:
    """Create the CA in ``confdir`` unless one is there; refuse one we did not make.

    Whoever controls the CA key can impersonate any host to the agents, so an existing confdir
    must be ours and not writable by others, and an existing key ours and readable by us alone.
    ``private``: the default per-user confdir, which must be 0700 altogether."""
    if not confdir.exists():
        # Traversable but not listable (agents read ca.crt by its path), or private altogether.
        confdir.mkdir(parents=True, mode=0o700 if private else 0o711)
    _check_ours(confdir, "confdir", private=private)
    key_path = confdir / CA_KEY_FILE
    if key_path.exists():
        _check_ours(key_path, "CA key", private=True)
        return
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sandgate"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem_key + cert.public_bytes(serialization.Encoding.PEM))


def publish_ca_cert(confdir: Path, extra: Path | None = None) -> Path:
    """Write the certificate alone, atomically, world-readable: the agent's trust anchor. ``extra``
    is a second copy (in a pod: the volume shared with agents, where the key never goes)."""
    data = (confdir / CA_KEY_FILE).read_bytes()
    cert = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE-----") :])
    pem = cert.public_bytes(serialization.Encoding.PEM)
    out = confdir / CA_CERT_FILE
    for target in (out, extra):
        if target is None:
            continue
        tmp = target.with_name(target.name + ".tmp")
        try:
            tmp.write_bytes(pem)
            tmp.chmod(0o644)
            tmp.replace(target)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()  # (no stray <name>.tmp beside a target that is a directory)
            raise
    return out


def cannot_publish(target: Path) -> str | None:
    """Why ``--ca-cert-out`` TARGET cannot be written, told at start before anything is built (the
    write is the last step, once the proxy serves), or None."""
    if target.is_dir():
        return "is a directory; name the file to write, e.g. DIR/ca.crt"
    if not target.parent.is_dir():
        return f"{target.parent} is not a directory (create it first)"
    return None
