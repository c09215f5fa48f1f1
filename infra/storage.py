"""The S3 bucket for large inputs and outputs: private, TLS-only, encrypted, expiring with the runs."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import Config

# Objects outlive their run's retention by this much, so a run never points at a deleted payload.
EXPIRY_MARGIN_DAYS = 7


class Storage(Construct):
    def __init__(self, scope: Construct, id: str, config: Config) -> None:
        super().__init__(scope, id)
        self.bucket = s3.Bucket(
            self,
            "payloads",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(expiration=Duration.days(config.run_retention_days + EXPIRY_MARGIN_DAYS))
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=False,
        )
