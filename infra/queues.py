"""SQS queues from `runplane.definitions`: each with its DLQ, SSE, TLS-only, sizes and timeouts explicit."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from runplane import definitions as defs

from infra.config import Config


class Queues(Construct):
    def __init__(self, scope: Construct, id: str, config: Config) -> None:
        super().__init__(scope, id)
        self.by_name: dict[str, sqs.Queue] = {}
        for queue in defs.QUEUES:  # dead-letter queues come first
            self.by_name[queue.name] = sqs.Queue(
                self,
                queue.name,
                visibility_timeout=Duration.seconds(queue.visibility_timeout_seconds),
                retention_period=Duration.seconds(queue.retention_seconds),
                max_message_size_bytes=queue.max_message_bytes,
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=(
                    sqs.DeadLetterQueue(
                        queue=self.by_name[queue.dead_letter_queue], max_receive_count=queue.max_receive_count
                    )
                    if queue.dead_letter_queue and queue.max_receive_count
                    else None
                ),
                removal_policy=config.removal_policy,
            )
        intake = self.by_name[defs.INTAKE.name]
        for principal in config.intake_producer_principals:
            intake.grant_send_messages(iam.ArnPrincipal(principal))
