"""The hub's own TLS certificate, for LANs without Tailscale.

On first use the hub creates a self-signed certificate (ECDSA P-256, ten years) and its key
(mode 0600) in the data directory. There is no CA: ``homelab-hub enroll`` prints the
certificate's SHA-256 fingerprint in the join command, ``homelab-agent join --fingerprint``
checks the certificate the hub presents against it *before* the join token is sent, stores
the certificate, and from then on the agent trusts that one certificate and nothing else.
Replacing the certificate therefore means re-joining the nodes, which is the point.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

CERT_FILE = "hub_tls.crt"
KEY_FILE = "hub_tls.key"


def cert_path(data_dir: Path) -> Path:
    return Path(data_dir) / CERT_FILE


def _names() -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    host = socket.gethostname()
    for h in {host, host.split(".")[0]}:
        if h and h != "localhost":
            names.append(x509.DNSName(h))
    return names


def ensure_cert(data_dir: Path) -> Path:
    """Create the certificate and key if missing; return the certificate's path."""
    crt, key_path = cert_path(data_dir), Path(data_dir) / KEY_FILE
    if crt.exists() and key_path.exists():
        return crt
    from hub.store import private_dir

    private_dir(data_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"homelab hub {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(_names()), critical=False)
        # a self-signed trust anchor: OpenSSL wants it marked as a CA to accept it as one
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    tmp = key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem_key)
    os.replace(tmp, key_path)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("created the hub's TLS certificate %s (%s)", crt, fingerprint_of_pem(crt.read_bytes()))
    return crt


def fingerprint_of_der(der: bytes) -> str:
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(pem: bytes) -> str:
    return fingerprint_of_der(ssl.PEM_cert_to_DER_cert(pem.decode()))


def fingerprint(data_dir: Path) -> str:
    return fingerprint_of_pem(ensure_cert(data_dir).read_bytes())


def curl_pin(data_dir: Path) -> str:
    """The certificate's public key as curl's ``--pinnedpubkey`` wants it (``sha256//<base64>``),
    for bootstrap one-liners that must fetch from a hub with this self-signed certificate."""
    import base64

    cert = x509.load_pem_x509_certificate(ensure_cert(data_dir).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def server_context(data_dir: Path) -> ssl.SSLContext:
    crt = ensure_cert(data_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(crt, Path(data_dir) / KEY_FILE)
    return ctx
