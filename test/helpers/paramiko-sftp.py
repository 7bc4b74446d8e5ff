# Drives paramiko (python3-paramiko) against an SFTP server for tests: for each "cipher,mac" argument, connects with
# only that cipher and MAC allowed, uploads LOCAL as REMOTE-<n>, downloads it back and prints
# "cipher mac sha256-of-the-download" (or "cipher mac ERROR message"). Usage:
#   paramiko-sftp.py PORT USER KEYFILE LOCAL cipher,mac [cipher,mac ...]
import hashlib
import sys

import paramiko

port, user, keyfile, local = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
key = paramiko.Ed25519Key.from_private_key_file(keyfile)
for n, pair in enumerate(sys.argv[5:]):
    cipher, mac = pair.split(",")
    try:
        t = paramiko.Transport(("127.0.0.1", int(port)))
        opts = t.get_security_options()
        opts.ciphers = (cipher,)
        if mac != "-":
            opts.digests = (mac,)
        t.connect(username=user, pkey=key)
        got_cipher = t.remote_cipher
        got_mac = t.remote_mac if mac != "-" else "-"
        sftp = paramiko.SFTPClient.from_transport(t)
        remote = f"paramiko-{n}.bin"
        sftp.put(local, remote)
        h = hashlib.sha256()
        with sftp.open(remote, "rb") as f:
            f.prefetch()
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
        sftp.remove(remote)
        sftp.close()
        t.close()
        print(got_cipher, got_mac, h.hexdigest(), flush=True)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        print(cipher, mac, "ERROR", repr(e), flush=True)
