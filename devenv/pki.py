"""Certificates for the local cluster: a CA, the API server's serving certificate, the
service-account signing key, and - for the real node - the kubelet's serving certificate and the
client certificate the API server presents to the kubelet.

Real TLS (no ``insecure-skip-tls-verify``) keeps the local cluster honest: clients, the
operator, kubectl and the API server's own calls to the kubelet verify their peer exactly as
they would on EKS or GKE.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
# The API server's addresses: loopback for the host, the real node's bridge gateway (where it
# listens when a real node runs, see healthnav.devenv.network) and the `kubernetes` Service's
# ClusterIP that in-cluster clients dial.
APISERVER_IPS = ("127.0.0.1", "10.89.0.1", "10.96.0.1")
APISERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class CertRequest:
    """What one leaf certificate says: its subject, where it is valid, and what it is for."""

    common_name: str
    organization: str | None = None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


def _issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, req: CertRequest):  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, req.common_name)]
    if req.organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, req.organization))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * req.server + [ExtendedKeyUsageOID.CLIENT_AUTH] * req.client
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in req.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in req.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def issue_cert(directory: Path, name: str, req: CertRequest) -> tuple[Path, Path]:
    """``<name>.crt``/``<name>.key`` signed by the cluster's CA (kept when they already exist)."""
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if not (cert_path.exists() and key_path.exists()):
        cert, key = _issue(*_load_ca(directory), req)
        _write_key(key_path, key)
        _write_cert(cert_path, cert)
    return cert_path, key_path


def create_pki(directory: Path) -> dict[str, Path]:
    """Write the CA, apiserver.crt/key and sa.key/sa.pub into ``directory`` (idempotent)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "ca_cert": directory / "ca.crt",
        "ca_key": directory / "ca.key",
        "serving_cert": directory / "apiserver.crt",
        "serving_key": directory / "apiserver.key",
        "sa_key": directory / "sa.key",
        "sa_pub": directory / "sa.pub",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "healthnav-local-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write_cert(paths["ca_cert"], ca_cert)
    _write_key(paths["ca_key"], ca_key)
    for stale in [*directory.glob("*.crt"), *directory.glob("*.key")]:  # leaves of an older CA
        if stale.stem != "ca":
            stale.unlink()
    issue_cert(
        directory,
        "apiserver",
        CertRequest("kube-apiserver", dns_names=APISERVER_NAMES, ip_addresses=APISERVER_IPS, server=True),
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(paths["sa_key"], sa_key)
    paths["sa_pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths
