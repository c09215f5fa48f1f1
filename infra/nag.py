"""cdk-nag findings reviewed and accepted, each with its reason (listed in docs/operations.md)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigatewayv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo

API_AUTH = (
    "Callers authenticate with Runplane API keys (Bearer), checked by the api function against hashed keys "
    "in DynamoDB on every request; an API Gateway authorizer would duplicate that and add latency."
)
# An HTTP API's only finding (no WAF, request validation or logging role to review): its route's authorizer
REVIEWED_HTTP_API = [NagPackSuppression(id="AwsSolutions-APIG4", reason=API_AUTH)]
REVIEWED_REST_API = [
    NagPackSuppression(id="AwsSolutions-APIG4", reason=API_AUTH),
    NagPackSuppression(id="AwsSolutions-COG4", reason=API_AUTH),
    NagPackSuppression(
        id="AwsSolutions-APIG2",
        reason="Requests are validated by the api function against its OpenAPI schema, with field-level errors "
        "in Runplane's error shape; gateway validation would answer in another shape.",
    ),
    NagPackSuppression(
        id="AwsSolutions-APIG3",
        reason="WAF is an account-level choice with its own cost; attach a web ACL to the stage if required. "
        "Stage throttling limits abuse by default.",
    ),
    NagPackSuppression(
        id="AwsSolutions-IAM4",
        reason="The account-wide API Gateway logging role uses the AWS-managed "
        "AmazonAPIGatewayPushToCloudWatchLogs policy, which is what API Gateway documents for it.",
        applies_to=[
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
        ],
    ),
]


def suppress_reviewed_findings(
    stack: Stack,
    *,
    roles: list[iam.Role],
    presigner: iam.Role,
    bucket: s3.Bucket,
    api: apigateway.RestApi | apigatewayv2.HttpApi,
) -> None:
    reviewed = REVIEWED_REST_API if isinstance(api, apigateway.RestApi) else REVIEWED_HTTP_API
    NagSuppressions.add_resource_suppressions(api, reviewed, apply_to_children=True)
    NagSuppressions.add_resource_suppressions(
        bucket,
        [
            NagPackSuppression(
                id="AwsSolutions-S1",
                reason="The bucket holds transient run payloads reached only through the functions' roles; "
                "access is audited with CloudTrail data events where required rather than server access logs.",
            )
        ],
    )
    bucket_id = stack.get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
    # `{account_id}/resources/{resource_id}`: one role serves every account
    resource_objects = NagPackSuppression(
        id="AwsSolutions-IAM5",
        reason="Resources' bytes are keyed {account_id}/resources/{resource_id} and one role serves every "
        "account: the api and intake delete only such objects, and each presign session is assumed with a "
        "session policy narrowing it to one account's {account_id}/resources/*.",
        applies_to=[f"Resource::<{bucket_id}.Arn>/*/resources/*"],
    )
    NagSuppressions.add_resource_suppressions(presigner, [resource_objects], apply_to_children=True)
    for role in roles:
        NagSuppressions.add_resource_suppressions(
            role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level "
                    "permissions; payload objects are keyed per account and run inside this one bucket.",
                    applies_to=["Resource::*", f"Resource::<{bucket_id}.Arn>/*"],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="The worker invokes the Bedrock models and Lambda functions the deployer lists in "
                    "the bedrock_models and lambda_functions context; a wildcard there is that choice (the "
                    "default allows every Bedrock model, in any region an inference profile routes to).",
                    applies_to=[
                        RegexAppliesTo(regex="/^Resource::arn:(aws|<AWS::Partition>):bedrock:.*$/g"),
                        RegexAppliesTo(regex="/^Resource::arn:aws[a-z-]*:lambda:.*$/g"),
                    ],
                ),
                resource_objects,
            ],
            apply_to_children=True,
        )
