"""DynamoDB tables from `runplane.definitions`: on demand, point-in-time recovery, encrypted, with TTL."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct
from runplane import definitions as defs

from infra.config import Config


def _attribute(key: defs.Key) -> dynamodb.Attribute:
    kind = dynamodb.AttributeType.NUMBER if key.type == "N" else dynamodb.AttributeType.STRING
    return dynamodb.Attribute(name=key.name, type=kind)


class Tables(Construct):
    def __init__(self, scope: Construct, id: str, config: Config) -> None:
        super().__init__(scope, id)
        self.by_name: dict[str, dynamodb.Table] = {}
        for table in defs.TABLES:
            created = dynamodb.Table(
                self,
                table.name,
                partition_key=_attribute(table.partition_key),
                sort_key=_attribute(table.sort_key) if table.sort_key else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                time_to_live_attribute=table.ttl_attribute,
                removal_policy=config.removal_policy,
            )
            for index in table.indexes:
                created.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=_attribute(index.partition_key),
                    sort_key=_attribute(index.sort_key) if index.sort_key else None,
                    projection_type=(
                        dynamodb.ProjectionType.INCLUDE
                        if index.include
                        else dynamodb.ProjectionType.KEYS_ONLY
                    ),
                    non_key_attributes=list(index.include) or None,
                )
            self.by_name[table.name] = created
