"""The bridge: Secrets Manager's native rotation, with rotd doing the steps.

A small rotation function (:mod:`rotd.bridge.lambda_function`, standard library and boto3
only) is what Secrets Manager invokes; it hands each step to rotd through an SQS queue and
waits for its effect. This package's ``__init__`` stays import-free: it ships in the
function's archive.
"""
