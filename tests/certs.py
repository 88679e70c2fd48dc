"""Test certificates made on the fly (``cryptography``): a CA, a server cert, client certs.

Nothing is checked in; every session writes fresh PEM files into a temp dir. EC P-256 keys keep
generation in milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of everything a TLS test needs."""

    ca: Path  # CA that signed server and clients
    server: CertPair  # SAN: 127.0.0.1, ::1, localhost
    client: CertPair  # CN "search-service", signed by ca
    other_client: CertPair  # CN "other-caller", signed by ca
    rogue_ca: Path  # a second, untrusted CA
    rogue_client: CertPair  # CN "search-service", signed by rogue_ca


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _builder(subject: str, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def _make_ca(cn: str, folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = _key()
    cert = (
        _builder(cn, _name(cn), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert, _write_cert(cert, folder / f"{cn}.pem")


def _issue(
    cn: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    folder: Path,
    server: bool,
) -> CertPair:
    key = _key()
    builder = _builder(cn, ca_cert.subject, key.public_key()).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if server:
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        sans = [x509.DNSName(cn)]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    stem = f"{cn}.{ca_cert.subject.rfc4514_string().split('=')[-1]}"
    return CertPair(
        _write_cert(cert, folder / f"{stem}.crt"), _write_key(key, folder / f"{stem}.key")
    )


def make_pki(folder: Path) -> Pki:
    """A fresh CA, server and client certificates (plus an untrusted CA's client) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert, ca_path = _make_ca("ris-test-ca", folder)
    rogue_key, rogue_cert, rogue_path = _make_ca("rogue-ca", folder)
    return Pki(
        ca=ca_path,
        server=_issue("ris-server", ca_key, ca_cert, folder, server=True),
        client=_issue("search-service", ca_key, ca_cert, folder, server=False),
        other_client=_issue("other-caller", ca_key, ca_cert, folder, server=False),
        rogue_ca=rogue_path,
        rogue_client=_issue("search-service", rogue_key, rogue_cert, folder, server=False),
    )
