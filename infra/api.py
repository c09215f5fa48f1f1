"""REST API Gateway in front of the api function: proxy integration, binary bodies, throttling, access
logs."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import Config

# bodies of these media types reach the function base64-encoded, byte for byte (file uploads); the local
# gateway encodes the same (runplane.local.gateway.BINARY_MEDIA_TYPES)
BINARY_MEDIA_TYPES = ["multipart/form-data"]


class Api(Construct):
    def __init__(self, scope: Construct, id: str, *, config: Config, handler: lambda_.Function) -> None:
        super().__init__(scope, id)
        access_logs = logs.LogGroup(self, "access-logs", removal_policy=config.removal_policy)
        self.rest_api = apigateway.LambdaRestApi(
            self,
            "rest",
            handler=handler,
            proxy=True,
            description="Runplane run API",
            binary_media_types=BINARY_MEDIA_TYPES,
            cloud_watch_role=True,
            deploy_options=apigateway.StageOptions(
                stage_name=config.stage,
                throttling_rate_limit=config.api_throttle_rate,
                throttling_burst_limit=config.api_throttle_burst,
                tracing_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
            ),
        )
        CfnOutput(self, "url", value=self.rest_api.url, description="Runplane API base URL")
        # The same URL built from the RestApi's id alone, for the functions' environment (the URL agents
        # report to). `rest_api.url` names the stage, which depends on the deployment, the methods and so
        # on the api function: in that function's environment it would be a circular dependency.
        stack = Stack.of(self)
        self.base_url = f"https://{self.rest_api.rest_api_id}.execute-api.{stack.region}.{stack.url_suffix}/{config.stage}"
