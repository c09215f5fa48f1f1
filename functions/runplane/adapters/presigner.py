"""Presigned S3 URLs for resources, signed by credentials that reach only the account's own resources.

With a presign role (deployed: `RUNPLANE_PRESIGN_ROLE_ARN`), each account's URLs are signed by a session
of that role assumed with a policy admitting just `<bucket>/<account>/resources/*`, so no URL, however
its key was made, can touch another account's objects. A session (one hour) is kept per account until a
new URL would outlive it: about one AssumeRole per account per warm function every 40 minutes, not per URL.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from runplane.adapters import aws

# A function's credentials are a role session, so assuming the presign role is role chaining, which AWS
# caps at one hour; a URL lives no longer than the session that signed it.
SESSION_SECONDS = 3600
RENEW_MARGIN_SECONDS = 300


def resource_prefix(account_id: str) -> str:
    return f"{account_id}/resources/"


class Presigner:
    def __init__(self, bucket: str, role_arn: str, client: Any = None):
        self.bucket = bucket
        self.role_arn = role_arn
        self._client = client  # an S3 client used as is (tests)
        self._sessions: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get_url(self, account_id: str, key: str, seconds: int, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{_quoted(filename)}"
        return self._s3(account_id, seconds).generate_presigned_url(
            "get_object", Params=params, ExpiresIn=seconds
        )

    def post_form(
        self,
        account_id: str,
        key: str,
        *,
        content_type: str,
        sizes: tuple[int, int],
        tagging: str,
        seconds: int,
    ) -> dict[str, Any]:
        """An S3 POST policy for exactly `key`, of `content_type`, between `sizes` bytes, tagged `tagging`."""
        fields = {"Content-Type": content_type}
        conditions: list[Any] = [
            {"Content-Type": content_type},
            ["content-length-range", *sizes],
        ]
        if tagging:
            document = _tagging_xml(tagging)
            fields["tagging"] = document
            conditions.append({"tagging": document})
        return self._s3(account_id, seconds).generate_presigned_post(
            self.bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=seconds
        )

    def _s3(self, account_id: str, seconds: int) -> Any:
        if self._client is not None:
            return self._client
        if not self.role_arn:
            return aws.client("s3")
        with self._lock:
            until, client = self._sessions.get(account_id, (0.0, None))
            if until - time.time() < seconds + RENEW_MARGIN_SECONDS:
                until, client = self._assume(account_id)
                self._sessions[account_id] = (until, client)
        return client

    def _assume(self, account_id: str) -> tuple[float, Any]:
        partition = self.role_arn.split(":")[1]  # aws, aws-cn, aws-us-gov
        arn = f"arn:{partition}:s3:::{self.bucket}/{resource_prefix(account_id)}*"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"],
                    "Resource": arn,
                }
            ],
        }
        credentials = aws.client("sts").assume_role(
            RoleArn=self.role_arn,
            RoleSessionName=f"presign-{account_id}"[:64],
            Policy=json.dumps(policy),
            DurationSeconds=SESSION_SECONDS,
        )["Credentials"]
        from botocore.config import Config

        client = aws.session().client(
            "s3",
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            config=Config(signature_version="s3v4"),
        )
        return credentials["Expiration"].timestamp(), client


def _tagging_xml(tagging: str) -> str:
    key, _, value = tagging.partition("=")
    return f"<Tagging><TagSet><Tag><Key>{key}</Key><Value>{value}</Value></Tag></TagSet></Tagging>"


def _quoted(filename: str) -> str:
    from urllib.parse import quote

    return quote(filename, safe="")
