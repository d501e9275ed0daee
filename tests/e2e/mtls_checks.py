"""End-to-end checks of mutual-TLS client authentication (RFC 8705) against oidc-provider,
behind an nginx TLS front that asks for client certificates and passes them on, as
oidc-provider's documentation describes; and of a certificate-bound token presented with the
same certificate to an upstream (nginx) that requires one. The PKI is made here by Python's
`cryptography`. Called from check.py."""
import base64
import datetime
import hashlib
import json
import os
import ipaddress

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, ca=False, sans=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def make_pki(tmp):
    """A CA, a server certificate for 127.0.0.1, a CA-issued client certificate and a
    self-signed one. Returns the template variables and the IdP's environment."""
    pem = serialization.Encoding.PEM
    key_pem = lambda k: k.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())  # noqa: E731
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("e2e mtls CA", ca_key, "e2e mtls CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("127.0.0.1", server_key, "e2e mtls CA", ca_key,
                   sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("mtls-client", client_key, "e2e mtls CA", ca_key)
    self_key = ec.generate_private_key(ec.SECP256R1())
    self_signed = _cert("self-signed-client", self_key, "self-signed-client", self_key)
    d = lambda n: os.path.join(tmp, n)  # noqa: E731
    paths = {
        "PKI_CA": _write(d("pki-ca.pem"), ca.public_bytes(pem)),
        "PKI_SERVER_CERT": _write(d("pki-server.pem"), server.public_bytes(pem)),
        "PKI_SERVER_KEY": _write(d("pki-server.key"), key_pem(server_key)),
        "MTLS_CLIENT_CERT": _write(d("mtls-client.pem"), client.public_bytes(pem)),
        "MTLS_CLIENT_KEY": _write(d("mtls-client.key"), key_pem(client_key)),
        "SELF_SIGNED_CERT": _write(d("self-signed.pem"), self_signed.public_bytes(pem)),
        "SELF_SIGNED_KEY": _write(d("self-signed.key"), key_pem(self_key)),
    }
    der = self_signed.public_bytes(serialization.Encoding.DER)
    jwk = json.loads(ECAlgorithm.to_jwk(self_key.public_key()))
    jwk["x5c"] = [base64.b64encode(der).decode()]
    jwk["x5t#S256"] = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    idp_env = {"MTLS_CA": ca.public_bytes(pem).decode(), "SELF_SIGNED_JWK": json.dumps(jwk)}
    return paths, idp_env


def thumbprint_s256(pem_path):
    with open(pem_path, "rb") as f:
        der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode(), hashlib.sha1(der).hexdigest()


def checks(env, check):
    def mtls_methods():
        for upstream, client in [("mtlsapi", "mtls-client"), ("selfsignedapi", "self-signed-client")]:
            r = requests.get(f"http://{upstream}.e2e.test/echo", timeout=10, proxies={"http": env.fwd})
            assert r.status_code == 200, (upstream, r.status_code, r.text)
            env.verify(r.text, "https://inventory.e2e.test", client, "inventory:read")
    check("tls_client_auth and self_signed_tls_client_auth get verified JWTs from oidc-provider (through an nginx mTLS front)",
          mtls_methods)

    def bound_token():
        r = requests.get("http://bound.e2e.test/echo", timeout=10, proxies={"http": env.fwd})
        assert r.status_code == 200, (r.status_code, r.text)
        authorization, _, fingerprint = r.text.partition("|")
        claims = env.verify(authorization, "https://inventory.e2e.test", "mtls-client", "inventory:read")
        s256, sha1 = thumbprint_s256(env.pki["MTLS_CLIENT_CERT"])
        assert claims.get("cnf", {}).get("x5t#S256") == s256, claims.get("cnf")
        assert fingerprint.strip() == sha1, (fingerprint, sha1)
    check("a certificate-bound token (cnf.x5t#S256) reaches the upstream over TLS with the same client certificate",
          bound_token)
