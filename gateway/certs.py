"""A certificate authority and a server certificate for the broker's TLS listener.

Devices get ca.crt (to trust the broker); the broker gets server.crt and server.key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetpulse.errors import UserError

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest lifetime clients such as browsers and Apple devices accept


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetpulse"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def create_certs(out: Path, hostnames: list[str] | None = None) -> dict[str, Path]:
    """Write ca.crt, ca.key, server.crt, server.key into `out`; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder()
          .subject_name(_name("fleetpulse CA")).issuer_name(_name("fleetpulse CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names = hostnames or ["localhost", socket.gethostname(), "127.0.0.1", "::1"]
    sans: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca.crt": out / "ca.crt", "ca.key": out / "ca.key",
             "server.crt": out / "server.crt", "server.key": out / "server.key"}
    paths["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(paths["ca.key"], ca_key)
    paths["server.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths["server.key"], key)
    return paths


def ensure_certs(directory: Path) -> Path:
    """Create certificates in `directory` the first time; return the directory. Never a
    new CA over an old one: every deployed device trusts ca.crt, so a silently new CA
    would cut the whole fleet off. Incomplete files are refused in one line instead."""
    names = ("ca.crt", "server.crt", "server.key")
    present = [n for n in names if (directory / n).exists()]
    if not present:
        create_certs(directory)
    elif len(present) < len(names):
        missing = ", ".join(n for n in names if n not in present)
        raise UserError(f"{directory} has {', '.join(present)} but not {missing}: restore them "
                        "from a backup, or rotate the CA on purpose with `fleetpulse gateway "
                        f"certs --out {directory} --rotate` and give every device the new "
                        "ca.crt")
    return directory


@dataclass
class CertStatus:
    name: str
    subject: str
    not_after: dt.datetime
    days_left: int


def check_certs(directory: Path, now: dt.datetime | None = None) -> list[CertStatus]:
    """Expiry of the CA and the server certificate in `directory`."""
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for name in ("ca.crt", "server.crt"):
        path = directory / name
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except FileNotFoundError:
            raise UserError(f"no {name} in {directory}: create the certificates with "
                            f"`fleetpulse gateway certs --out {directory}`") from None
        except ValueError as e:
            raise UserError(f"{path} is not a PEM certificate ({e})") from None
        end = cert.not_valid_after_utc
        out.append(CertStatus(name, cert.subject.rfc4514_string(), end,
                              (end - now) // dt.timedelta(days=1)))
    return out
