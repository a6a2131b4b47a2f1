#!/usr/bin/env python3
"""Verifies one Standard Webhooks signature, written from the specification
alone (https://www.standardwebhooks.com) with the Python standard library:
an implementation independent of the gateway's, for its tests and as an
example for receivers.

Usage:
    STANDARD_WEBHOOK_SECRET=whsec_... verify_standard_webhook.py \
        WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE [NOW] < BODY

The secret comes from the environment so that it never shows in a process
list. The body is read from standard input, byte for byte. NOW (Unix seconds)
defaults to the clock. Exit status: 0 valid, 1 invalid, 2 usage error.
"""

import base64
import hashlib
import hmac
import os
import sys
import time

# The spec's recommended tolerance against replays.
TOLERANCE_SECONDS = 5 * 60


def key_of(secret):
    """The HMAC key: the base64 after `whsec_` (libraries also take it bare)."""
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret, validate=True)


def verify(key, message_id, timestamp, signatures, body, now):
    """Whether one of the space-separated `v1,` signatures matches."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > TOLERANCE_SECONDS:
        return False
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        # Constant-time comparison: a plain == would leak timing.
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


def main(arguments):
    if len(arguments) not in (3, 4) or "STANDARD_WEBHOOK_SECRET" not in os.environ:
        print(__doc__, file=sys.stderr)
        return 2
    message_id, timestamp, signatures = arguments[:3]
    now = int(arguments[3]) if len(arguments) == 4 else int(time.time())
    key = key_of(os.environ["STANDARD_WEBHOOK_SECRET"])
    body = sys.stdin.buffer.read()
    if verify(key, message_id, timestamp, signatures, body, now):
        return 0
    print("invalid signature", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
