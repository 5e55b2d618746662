"""C2PA content credentials: a test image signed offline with a self-signed test certificate."""

import datetime
import io

import pytest
from PIL import Image

c2pa = pytest.importorskip("c2pa")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from synthcheck.inference.metadata import combine_verdict, inspect  # noqa: E402


def _self_signed():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "synthcheck test"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SynthCheck tests")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem_cert, pem_key


def _signed_jpeg(source_type: str) -> bytes:
    cert, key = _self_signed()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, cert, key, None))  # no TSA: offline
    manifest = {"claim_generator_info": [{"name": "synthcheck-test-generator", "version": "1.0"}], "title": "t",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created",
                    "digitalSourceType": f"http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}"}]}}]}
    src = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(src, "JPEG")
    src.seek(0)
    dst = io.BytesIO()
    c2pa.Builder(manifest).sign(signer, "image/jpeg", src, dst)
    return dst.getvalue()


def test_c2pa_ai_manifest_is_read_and_validated():
    ev = inspect(_signed_jpeg("trainedAlgorithmicMedia"))
    prov = [e for e in ev if e.field == "claim_generator"]
    assert prov and "synthcheck-test-generator" in prov[0].value
    assert "validation: Valid" in prov[0].note and "untrusted" in prov[0].note  # self-signed: valid, not trusted
    ai = [e for e in ev if e.indicates == "ai"]
    assert ai and ai[0].strength == "strong"
    assert combine_verdict("real", ev)[0] == "ai"


def test_c2pa_camera_capture_is_not_ai_evidence():
    ev = inspect(_signed_jpeg("digitalCapture"))
    assert [e for e in ev if e.indicates == "ai"] == []
    assert combine_verdict("ai", ev)[0] == "ai"


def test_tampered_c2pa_file_does_not_validate():
    data = bytearray(_signed_jpeg("trainedAlgorithmicMedia"))
    data[-200] ^= 0xFF  # flip bits in the image data after signing
    ev = inspect(bytes(data))
    prov = [e for e in ev if e.field == "claim_generator"]
    assert prov and "Invalid" in prov[0].note
    assert all(e.strength != "strong" for e in ev if e.indicates == "ai")
