"""How Secrets Manager's refusals reach an operator: category (retried or not) and advice."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from rotd.errors import Category
from rotd.secretstore import translate


def refusal(status: int, code: str, message: str = "no", retries: int = 0) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
    }
    return ClientError(response, "PutSecretValue")


@pytest.mark.parametrize(
    ("status", "code", "category"),
    [
        (400, "AccessDeniedException", Category.PERMISSION),
        (403, "SomeNewDenial", Category.PERMISSION),
        (400, "ThrottlingException", Category.THROTTLED),
        (503, "ServiceUnavailable", Category.SERVER),
        (400, "ResourceNotFoundException", Category.NOT_FOUND),
        (400, "KMSAccessDeniedException", Category.PERMISSION),
        (400, "InvalidRequestException", Category.CONFLICT),
    ],
)
def test_refusals_are_sorted_into_what_an_operator_does_next(
    status: int, code: str, category: Category
) -> None:
    error = translate(refusal(status, code), "prod/app", "put_secret_value")
    assert error.category is category
    assert error.transient is category.transient


def test_a_denied_write_names_the_action_to_allow() -> None:
    error = translate(refusal(403, "AccessDenied"), "prod/app", "put_secret_value")
    assert "secretsmanager:PutSecretValue" in error.reason


@pytest.mark.parametrize(("retries", "retried"), [(0, False), (1, True), (4, True)])
def test_a_refusal_says_whether_an_earlier_attempt_was_sent(retries: int, retried: bool) -> None:
    """A refused finishSecret after a retry may be refusing the call's own first attempt."""
    error = translate(
        refusal(400, "InvalidParameterException", retries=retries), "prod/app", "move"
    )
    assert error.retried is retried
