# Drives Debian's python3-pykmip ProxyKmipClient for test/kms/kmip/pykmip.test.ts: reads one JSON command per line
# on stdin ({"op": ..., ...}), runs it over one TLS connection configured by the pykmip.conf given as argv[1], and
# prints one JSON result per line: {"ok": value} or {"error": {"status", "reason", "message"}} (KmipOperationFailure)
# or {"error": {"type", "message"}} for anything else (a TLS refusal).
import base64
import json
import sys

from kmip.core import enums
from kmip.core.factories import attributes as attribute_factory
from kmip.pie import exceptions, objects
from kmip.pie.client import ProxyKmipClient

GCM = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
    "block_cipher_mode": enums.BlockCipherMode.GCM,
    "random_iv": True,
    "tag_length": 16,
}
factory = attribute_factory.AttributeFactory()


def b64(b):
    return base64.b64encode(b).decode("ascii")


def run(c, cmd):
    op = cmd["op"]
    if op == "create":
        return c.create(enums.CryptographicAlgorithm.AES, cmd["length"], name=cmd.get("name"))
    if op == "activate":
        c.activate(cmd["uid"])
        return cmd["uid"]
    if op == "get":
        o = c.get(cmd["uid"])
        return {"type": type(o).__name__, "value": b64(o.value)}
    if op == "encrypt":
        data, iv = c.encrypt(base64.b64decode(cmd["data"]), uid=cmd["uid"], cryptographic_parameters=GCM)
        return {"data": b64(data), "iv": b64(iv)}
    if op == "decrypt":
        return b64(
            c.decrypt(
                base64.b64decode(cmd["data"]),
                uid=cmd["uid"],
                cryptographic_parameters=GCM,
                iv_counter_nonce=base64.b64decode(cmd["iv"]),
            )
        )
    if op == "locate":
        attrs = []
        if "name" in cmd:
            attrs.append(factory.create_attribute(enums.AttributeType.NAME, cmd["name"]))
        if "state" in cmd:
            attrs.append(factory.create_attribute(enums.AttributeType.STATE, enums.State[cmd["state"]]))
        return c.locate(attributes=attrs)
    if op == "attributes":
        uid, attrs = c.get_attributes(cmd["uid"], cmd.get("names"))
        out = {}
        for a in attrs:
            v = a.attribute_value
            if hasattr(v, "name_value"):
                v = v.name_value.value
            else:
                v = v.value
            out[a.attribute_name.value] = v.name if hasattr(v, "name") else v
        return {"uid": uid, "attributes": out}
    if op == "revoke":
        c.revoke(enums.RevocationReasonCode[cmd["reason"]], cmd["uid"])
        return cmd["uid"]
    if op == "destroy":
        c.destroy(cmd["uid"])
        return cmd["uid"]
    if op == "register-secret":
        s = objects.SecretData(base64.b64decode(cmd["value"]), enums.SecretDataType.PASSWORD, name=cmd.get("name"))
        return c.register(s)
    if op == "register-key":
        k = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, cmd["length"], base64.b64decode(cmd["value"]),
                                 name=cmd.get("name"))
        return c.register(k)
    raise ValueError("unknown op " + op)


def main():
    c = ProxyKmipClient(config="client", config_file=sys.argv[1])
    try:
        c.open()
    except Exception as e:  # a refused TLS handshake
        print(json.dumps({"error": {"type": type(e).__name__, "message": str(e)}}), flush=True)
        return
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                print(json.dumps({"ok": run(c, cmd)}), flush=True)
            except exceptions.KmipOperationFailure as e:
                print(json.dumps({"error": {"status": e.status.name, "reason": e.reason.name if e.reason else None,
                                            "message": e.message}}), flush=True)
            except Exception as e:
                print(json.dumps({"error": {"type": type(e).__name__, "message": str(e)}}), flush=True)
    finally:
        try:
            c.close()
        except Exception:
            pass


main()
