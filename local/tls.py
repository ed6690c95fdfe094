"""A throwaway TLS certificate for 127.0.0.1, made at start and never stored in the repository.

The local WebSocket gateway serves API Gateway's management API over HTTPS because
Chalice's `websocket_api` always calls `https://{domain_name}/{stage}` (see
local/websocket_gateway.py). The processes that call it trust the certificate through
botocore's standard AWS_CA_BUNDLE variable, whose bundle also holds certifi's authorities,
so real AWS endpoints those processes may be pointed at still verify.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class LocalCertificate:
    cert_file: Path  # the server's certificate
    key_file: Path  # its private key
    ca_bundle: Path  # for AWS_CA_BUNDLE: certifi's authorities and this certificate


def make_local_certificate(directory: Path, host: str = "127.0.0.1") -> LocalCertificate:
    """A self-signed certificate for the IP address `host`, valid for a day, written to `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"llama2-chatbot local gateway {host}")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        # Its own authority: trusted as itself, it needs no separate CA certificate.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = LocalCertificate(directory / "gateway-cert.pem", directory / "gateway-key.pem",
                             directory / "ca-bundle.pem")
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    files.cert_file.write_bytes(cert_pem)
    files.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    files.key_file.chmod(0o600)
    files.ca_bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + cert_pem)
    return files
