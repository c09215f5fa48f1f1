"""The S3 bucket for large inputs and outputs and for resources' bytes: private, TLS-only, encrypted,
each object expiring by the lifecycle rule of its expiry tag (`runplane.definitions.EXPIRY_TAG`)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from constructs import Construct
from runplane import definitions as defs

from infra.config import Config

# Objects outlive their run's retention by this much, so a run never points at a deleted payload.
EXPIRY_MARGIN_DAYS = 7
# A resource's bytes outlive its record's expiry (its TTL) by this much, so a live record never points at
# deleted bytes (lifecycle rules count whole days from the object's creation).
RESOURCE_MARGIN_DAYS = 1
# Presigned POST uploads are single requests; an incomplete multipart upload is never Runplane's own.
INCOMPLETE_UPLOAD_DAYS = 1


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
                # payloads and outcomes, kept with their run
                s3.LifecycleRule(
                    id="run-objects",
                    tag_filters={defs.EXPIRY_TAG: "run"},
                    expiration=Duration.days(config.run_retention_days + EXPIRY_MARGIN_DAYS),
                ),
                # an expiring resource's bytes; a pinned resource's are untagged, kept until deleted
                s3.LifecycleRule(
                    id="resource-objects",
                    tag_filters={defs.EXPIRY_TAG: "resource"},
                    expiration=Duration.days(config.resource_retention_days + RESOURCE_MARGIN_DAYS),
                ),
                # S3 refuses a tag filter beside this action: the rule covers the whole bucket
                s3.LifecycleRule(
                    id="incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS),
                ),
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=False,
        )
