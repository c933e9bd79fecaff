"""What the bridge rotation function and rotd say to each other, and how they read it.

Standard library only: this module ships inside the function's archive as well as in rotd.

- The function sends one SQS message per step it is invoked for (:func:`encode_message`).
  It is a hint: rotd acts only on what Secrets Manager's own state shows.
- rotd marks a version it has set and tested with the staging label :data:`TESTED`, which
  setSecret and testSecret wait for; createSecret waits for the version's value and
  finishSecret for AWSCURRENT.
- rotd reports a failed step in the tag :data:`FAILURE_TAG` on the secret, whose value names
  the message it answers (:func:`encode_failure`); the function reads it with DescribeSecret,
  which it calls anyway, so a failure reaches it within one poll.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
# A staging label of rotd's own: on the version rotd last set and tested. A label sits on one
# version at a time, so moving it to the next rotation's version is the only write it costs.
TESTED = "ROTD_TESTED"
FAILURE_TAG = "rotd:bridge:failure"
FORMAT = 1
# Secrets Manager's limits on a tag's value: 256 characters of letters, digits, spaces and
# these signs.
_TAG_VALUE_MAX = 256
_NOT_TAG_SAFE = re.compile(r"[^\w .:/=+\-@]")
_REQUEST = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class Message:
    """One step the function asks rotd to perform."""

    secret_id: str  # the secret's ARN, as Secrets Manager passed it to the function
    token: str  # the ClientRequestToken: the version id being rotated to
    step: str
    request: str  # unique per message: the failure tag answering it names it
    function_arn: str  # the function that sent it (for logs; rotd trusts Secrets Manager's)


@dataclass(frozen=True)
class Failure:
    """A failed step as rotd reports it on the secret."""

    request: str
    step: str
    category: str
    reason: str


def encode_message(message: Message) -> str:
    return json.dumps(
        {
            "format": FORMAT,
            "SecretId": message.secret_id,
            "ClientRequestToken": message.token,
            "Step": message.step,
            "Request": message.request,
            "Function": message.function_arn,
        },
        sort_keys=True,
    )


def decode_message(body: str) -> Message:
    """The message in ``body``; ValueError saying what is wrong with it otherwise."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
    fields = {}
    for key in ("SecretId", "ClientRequestToken", "Step", "Request", "Function"):
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value) > 2048:
            raise ValueError(f"{key} missing or not a string")
        fields[key] = value
    if fields["Step"] not in STEPS:
        raise ValueError(f"unknown Step {fields['Step'][:40]!r}")
    if not _REQUEST.match(fields["Request"]):
        raise ValueError("Request is not an id")
    return Message(
        secret_id=fields["SecretId"],
        token=fields["ClientRequestToken"],
        step=fields["Step"],
        request=fields["Request"],
        function_arn=fields["Function"],
    )


def tag_safe(text: str) -> str:
    """``text`` with what a tag value may not hold replaced by spaces, runs of spaces folded."""
    return " ".join(_NOT_TAG_SAFE.sub(" ", text).split())


def encode_failure(failure: Failure) -> str:
    """The failure tag's value: ``request step category reason``, cut to the tag's limit.
    The reason must already be scrubbed of secret values (rotd's errors hold none)."""
    head = f"{failure.request} {failure.step} {tag_safe(failure.category) or '-'} "
    return (head + tag_safe(failure.reason))[:_TAG_VALUE_MAX]


def decode_failure(value: str) -> Failure | None:
    """The failure a tag's value reports; None when it is not one rotd wrote."""
    parts = value.split(" ", 3)
    if len(parts) < 3 or not _REQUEST.match(parts[0]) or parts[1] not in STEPS:
        return None
    return Failure(
        request=parts[0],
        step=parts[1],
        category=parts[2],
        reason=parts[3] if len(parts) == 4 else "",
    )
