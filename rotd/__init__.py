"""rotd: rotates database credentials kept in AWS Secrets Manager."""

__version__ = "0.1.0"
