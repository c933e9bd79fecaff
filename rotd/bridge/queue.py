"""The bridge's SQS queue as rotd reads it: long polls, deletions, visibility changes.

Messages arrive in batches of up to ten through 20-second long polls, hidden from other
consumers for :data:`VISIBILITY_S` while a step runs (extended as long as it runs). A
message is deleted once its step's effect is visible in Secrets Manager, or once it is
dropped; one whose secret another process holds is shown again soon. SQS gives each message
to one consumer at a time, so several daemons share one queue. botocore's errors become
:class:`rotd.errors.AwsError` here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rotd.errors import AwsError
from rotd.inventory import AwsAccess, Bridge, Inventory, every_service_endpoint
from rotd.secretstore import aws_error, connection_for, open_client

RECEIVE_WAIT_S = 20  # SQS's longest long poll
BATCH = 10  # SQS's largest batch
# How long a received message stays hidden: longer than a step takes (a database's login
# timeout, verify endpoints' replication bound); a step that runs longer extends it.
VISIBILITY_S = 120
RETRY_SOON_S = 5  # shown again this soon when another process holds the secret


@dataclass(frozen=True)
class Received:
    message_id: str
    body: str
    receipt: str
    receive_count: int


class Queue:
    """One SQS queue, through one client."""

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self._client = client

    async def receive(self) -> list[Received]:
        """Wait up to :data:`RECEIVE_WAIT_S` for messages; hide those received."""
        r = await self._call(
            "sqs:ReceiveMessage",
            "receive_message",
            MaxNumberOfMessages=BATCH,
            WaitTimeSeconds=RECEIVE_WAIT_S,
            VisibilityTimeout=VISIBILITY_S,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Received(
                message_id=str(m.get("MessageId", "")),
                body=str(m.get("Body", "")),
                receipt=str(m["ReceiptHandle"]),
                receive_count=int((m.get("Attributes") or {}).get("ApproximateReceiveCount", 1)),
            )
            for m in r.get("Messages") or ()
        ]

    async def delete(self, message: Received) -> None:
        await self._call("sqs:DeleteMessage", "delete_message", ReceiptHandle=message.receipt)

    async def hide(self, message: Received, seconds: int) -> None:
        """Keep ``message`` from every consumer for ``seconds`` from now."""
        await self._call(
            "sqs:ChangeMessageVisibility",
            "change_message_visibility",
            ReceiptHandle=message.receipt,
            VisibilityTimeout=seconds,
        )

    async def attributes(self) -> dict[str, str]:
        """The queue's attributes (its ARN, visibility timeout, policy...)."""
        r = await self._call(
            "sqs:GetQueueAttributes", "get_queue_attributes", AttributeNames=["All"]
        )
        return {str(k): str(v) for k, v in (r.get("Attributes") or {}).items()}

    async def _call(self, action: str, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await getattr(self._client, method)(
                QueueUrl=self.url, **kwargs
            )
        except (BotoCoreError, ClientError) as exc:
            raise aws_error(exc, f"{action} on {self.url}") from None
        except AwsError:
            raise
        return result


@asynccontextmanager
async def open_queue(
    inventory: Inventory, bridge: Bridge, access: AwsAccess
) -> AsyncIterator[Queue]:
    """The queue of ``bridge``, reached as the identity of ``access`` (the account and role
    its secrets are reached with), in the queue's own region."""
    connection = connection_for(inventory).to(access)
    connection = replace(
        connection,
        region=bridge.queue_region or connection.region,
        # A Secrets Manager VPC endpoint serves that service only; an emulator serves all.
        endpoint_url=every_service_endpoint(access.endpoint_url),
        read_timeout_s=RECEIVE_WAIT_S + 10,
    )
    async with open_client("sqs", connection, retry_mode="standard") as client:
        yield Queue(bridge.queue_url, client)
