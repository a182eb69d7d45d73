"""The per-sidecar interception CA: EC P-256 (cheaper handshakes than RSA), made at start.

The key stays in ``<confdir>/mitmproxy-ca.pem`` (mode 0600, read by mitmproxy's cert store); agents
only ever get ``<confdir>/ca.crt``, the certificate alone.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_KEY_FILE = "mitmproxy-ca.pem"  # the name mitmproxy's cert store loads
CA_CERT_FILE = "ca.crt"


def ensure_ca(confdir: Path, common_name: str = "Sandgate sidecar CA") -> None:
    # Traversable but not listable: agents read ca.crt by its path; the key file itself is 0600.
    confdir.mkdir(parents=True, exist_ok=True, mode=0o711)
    key_path = confdir / CA_KEY_FILE
    if key_path.exists():
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
        tmp.write_bytes(pem)
        tmp.chmod(0o644)
        tmp.replace(target)
    return out
