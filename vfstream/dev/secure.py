"""The secured local stack's material: a CA, the broker's and a client's certificates, and
the SCRAM passwords of a super user and of the ``vfstream`` principal.

Made once, at first need, in ``<state>/secure`` (files readable by their owner only), so a
restarted broker keeps trusting the same clients; ``trustme`` and ``cryptography`` (the dev
extra) make them. The broker loads PEM files directly (``ssl.keystore.type=PEM``): no
keytool, no JKS.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# The principal with every right, for provisioning (ACLs, the broker's own connections).
ADMIN_USER = "admin"
# The principal vfstream runs as: only the ACLs of vfstream.kafka.acls.
CLIENT_USER = "vfstream"
SCRAM_MECHANISM = "SCRAM-SHA-512"


def _write_private(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(raw)


def _pkcs8(key_pem: bytes) -> bytes:
    # Kafka's PEM keystore reads PKCS#8 keys only; trustme writes "traditional" ones.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class SecureMaterial:
    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def broker_keystore(self) -> Path:
        """The broker's key and certificate chain (one PEM file, as Kafka reads it)."""
        return self.folder / "broker.pem"

    @property
    def client_cert(self) -> Path:
        """A client certificate for the ``vfstream`` principal (CN=vfstream), for mTLS."""
        return self.folder / "client-vfstream.crt"

    @property
    def client_key(self) -> Path:
        return self.folder / "client-vfstream.key"

    @property
    def passwords_file(self) -> Path:
        return self.folder / "scram-passwords.json"

    def passwords(self) -> dict[str, str]:
        loaded: dict[str, str] = json.loads(self.passwords_file.read_text())
        return loaded

    def password(self, user: str) -> str:
        return self.passwords()[user]

    @classmethod
    def ensure(cls, state_dir: Path, host: str = "127.0.0.1") -> SecureMaterial:
        """The material in ``state_dir``, made now if it is not there yet."""
        material = cls(state_dir / "secure")
        if not material.passwords_file.exists():
            material._make(host)
        return material

    def _make(self, host: str) -> None:
        import trustme

        ca = trustme.CA(organization_name="vfstream local stack")
        broker = ca.issue_cert(host, "localhost", common_name="kafka-broker")
        client = ca.issue_cert("vfstream-client", common_name=CLIENT_USER)
        _write_private(self.ca_file, ca.cert_pem.bytes())
        chain = b"".join(blob.bytes() for blob in broker.cert_chain_pems)
        _write_private(self.broker_keystore, _pkcs8(broker.private_key_pem.bytes()) + chain)
        _write_private(self.client_cert, b"".join(b.bytes() for b in client.cert_chain_pems))
        _write_private(self.client_key, _pkcs8(client.private_key_pem.bytes()))
        passwords = {ADMIN_USER: secrets.token_urlsafe(24), CLIENT_USER: secrets.token_urlsafe(24)}
        # Written last: its presence says the material is whole.
        _write_private(self.passwords_file, json.dumps(passwords))
