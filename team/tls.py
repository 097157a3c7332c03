"""TLS for the local team stack: a CA of its own and one server certificate for 127.0.0.1 and localhost.

`ensure(<stack>/tls)` makes, once, and keeps:

    ca.crt       the CA every client trusts (MLFLOW_TRACKING_SERVER_CERT_PATH, PREFECT_API_SSL_CERT_FILE, sslrootcert)
    ca.key       0600; signs server.crt (renewed at `up` when it has under RENEW_DAYS left)
    server.crt   the certificate PostgreSQL, the MLflow server and the Prefect server present
    server.key   0600

Real certificates: put server.crt (the server's certificate, then its intermediates), server.key and ca.crt (the
root that issued it) there and no ca.key; they are then used as they are, never renewed, and checked like ours.
Every `up` checks that server.crt chains to ca.crt for both names and is not expired, and that server.key is its key.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from team.settings import StackError, write_private

HOSTS = ("127.0.0.1", "localhost")  # what every client connects to on the local stack
CA_DAYS, SERVER_DAYS, RENEW_DAYS = 3650, 397, 30


@dataclass(frozen=True)
class TlsFiles:
    """The stack's certificate files."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def at(cls, folder: Path) -> TlsFiles:
        """The files' places in `folder`."""
        return cls(folder / "ca.crt", folder / "ca.key", folder / "server.crt", folder / "server.key")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: object) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: object) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()  # type: ignore[attr-defined]


def _name(common_name: str) -> object:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "humane"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def make_ca(files: TlsFiles, days: int = CA_DAYS) -> None:
    """A new CA (ECDSA P-256): ca.key (0600) and ca.crt, named after this machine and the time it was made."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"humane team stack CA ({socket.gethostname()}, {_now():%Y-%m-%d %H:%M:%S})")
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(files.ca_key, _key_pem(key))
    files.ca.write_text(_cert_pem(cert))
    files.ca.chmod(0o644)


def _usage(cert_sign: bool) -> object:
    from cryptography import x509

    flags = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    return x509.KeyUsage(digital_signature=True, key_cert_sign=cert_sign, crl_sign=cert_sign, **flags)


def make_server_cert(files: TlsFiles, days: int = SERVER_DAYS) -> None:
    """A new server key (0600) and certificate for HOSTS (IP and DNS names), signed by the CA in `files`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(HOSTS[0])), *(x509.DNSName(h) for h in HOSTS[1:])]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"humane team stack ({', '.join(HOSTS)})"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(min(_now() + datetime.timedelta(days=days), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    write_private(files.key, _key_pem(key))
    files.cert.write_text(_cert_pem(cert))
    files.cert.chmod(0o644)


def days_left(cert_file: Path) -> float:
    """Days until the first certificate in `cert_file` expires."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return (cert.not_valid_after_utc - _now()).total_seconds() / 86400


def ensure(folder: Path) -> TlsFiles:
    """The stack's certificates in `folder`: made when absent, renewed when ours and expiring; checked in any case."""
    folder.mkdir(mode=0o755, exist_ok=True)
    files = TlsFiles.at(folder)
    present = {path.name for path in (files.ca, files.ca_key, files.cert, files.key) if path.exists()}
    if not present:
        make_ca(files)
    elif "ca.key" not in present:  # certificates from elsewhere: used as they are
        missing = {"ca.crt", "server.crt", "server.key"} - present
        if missing:
            raise StackError(f"{folder}: {', '.join(sorted(missing))} missing (see team/tls.py for the files needed)")
    elif "ca.crt" not in present:
        raise StackError(f"{folder}: ca.key without ca.crt; delete ca.key to make a new CA")
    if files.ca_key.exists() and (not files.cert.exists() or days_left(files.cert) < RENEW_DAYS or _broken(files)):
        make_server_cert(files)
    check(files)
    return files


def _broken(files: TlsFiles) -> bool:
    try:
        check(files)
    except StackError:
        return True
    return False


def check(files: TlsFiles) -> None:
    """Refuse certificates a client would refuse.

    server.crt must chain to ca.crt for every name in HOSTS, now; server.key must be its key, 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

    try:
        roots = x509.load_pem_x509_certificates(files.ca.read_bytes())
        leaf, *intermediates = x509.load_pem_x509_certificates(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise StackError(f"{files.cert.parent}: cannot read the certificates or key: {err}") from err
    if files.key.stat().st_mode & 0o077:
        raise StackError(f"{files.key}: readable by others (mode {files.key.stat().st_mode & 0o777:o}); chmod 600")
    if key.public_key() != leaf.public_key():
        raise StackError(f"{files.key} is not the key of {files.cert}")
    builder = PolicyBuilder().store(Store(roots))
    for host in HOSTS:
        subject = IPAddress(ipaddress.ip_address(host)) if host[0].isdigit() else DNSName(host)
        try:
            builder.build_server_verifier(subject).verify(leaf, intermediates)
        except VerificationError as err:
            raise StackError(f"{files.cert} does not verify against {files.ca} for {host}: {err}") from err
