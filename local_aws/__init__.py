"""Offline stand-in for the AWS services the pipeline uses: S3, Bedrock batch inference, runtime.

Run it with ``python -m local_aws --port 4566``. Never imported by ``dags/`` or ``plugins/``: the
pipeline reaches it only through an AWS connection whose ``endpoint_url`` points at it.
"""

from __future__ import annotations

from local_aws.settings import ACCOUNT_ID

__all__ = ["ACCOUNT_ID"]
