# Field encryption and a secret from Python with requests and the application's client certificate.
# KMS_URL=https://kms.example:8443 CERT=/etc/webapp/kms python3 kms-python.py
import base64
import os

import requests

url = os.environ["KMS_URL"]
cert = os.environ["CERT"]
ca = f"{cert}/ca.crt"  # trust only the KMS's own CA
session = requests.Session()
session.cert = (f"{cert}/client.crt", f"{cert}/client.key")  # mutual TLS


def kms(method, path, body=None):
    # verify= on each request: a REQUESTS_CA_BUNDLE in the environment would override session.verify
    r = session.request(method, url + path, json=body, verify=ca, timeout=10)
    if r.status_code != 200:
        problem = r.json()  # RFC 9457 problem+json with a stable "code"
        raise RuntimeError(f"{problem['code']}: {problem['detail']}")
    return r.json()


context = {"table": "cards", "row": "42"}
plaintext = base64.b64encode(b"4111 1111 1111 1111").decode()
ciphertext = kms("POST", "/v1/keys/customers/encrypt", {"plaintext": plaintext, "context": context})["ciphertext"]
print("ciphertext:", ciphertext)
plain = kms("POST", "/v1/keys/customers/decrypt", {"ciphertext": ciphertext, "context": context})["plaintext"]
print(base64.b64decode(plain).decode())
try:
    kms("POST", "/v1/keys/customers/decrypt", {"ciphertext": ciphertext, "context": {"table": "cards", "row": "43"}})
except RuntimeError as e:
    print("wrong context:", e)
secret = kms("GET", "/v1/secrets/webapp.mail-api-key")
print(f"secret v{secret['version']}:", base64.b64decode(secret["value"]).decode())
