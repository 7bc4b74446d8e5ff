#!/bin/sh
# Encrypt and decrypt a field, and read a secret, with curl and the application's client certificate.
# KMS_URL=https://kms.example:8443  CERT=/etc/webapp/kms  (client.crt, client.key, ca.crt from `atrest kms client issue`)
set -eu
kms() { # kms METHOD PATH [JSON]
  curl -sS --fail-with-body --cert "$CERT/client.crt" --key "$CERT/client.key" --cacert "$CERT/ca.crt" \
    -X "$1" -H 'content-type: application/json' ${3:+--data "$3"} "$KMS_URL$2"
}
plaintext=$(printf %s '4111 1111 1111 1111' | base64)
ciphertext=$(kms POST /v1/keys/customers/encrypt \
  "{\"plaintext\":\"$plaintext\",\"context\":{\"table\":\"cards\",\"row\":\"42\"}}" | jq -r .ciphertext)
echo "ciphertext: $ciphertext"
kms POST /v1/keys/customers/decrypt \
  "{\"ciphertext\":\"$ciphertext\",\"context\":{\"table\":\"cards\",\"row\":\"42\"}}" | jq -r .plaintext | base64 -d
echo
kms GET /v1/secrets/webapp.mail-api-key | jq -r .value | base64 -d
echo
