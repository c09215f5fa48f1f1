"""The API Gateway in front of the api function, by context `api`: an HTTP API (the default) or a REST API
(for what only REST offers). Either is a catch-all proxy to the function, throttled and access-logged.

CORS (context `cors_origins`, none by default): the api function is told the origins either way; an HTTP
API also answers preflights itself from the same lists (its own headers replace the function's), while a
REST API passes them to the function like any request (runplane.api.cors)."""

from __future__ import annotations

import json

import jsii
from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigatewayv2
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from runplane.api import cors

from infra.config import API_TIMEOUT_SECONDS, Config

# the REST API's binary media types: their bodies reach the function base64-encoded, byte for byte (file
# uploads); the local gateway encodes the same (runplane.local.gateway.BINARY_MEDIA_TYPES). An HTTP API has
# no such setting: it base64-encodes every body whose media type is not text.
BINARY_MEDIA_TYPES = ["multipart/form-data"]
# The REST stage's access log fields (AccessLogFormat.json_with_standard_fields below), for an HTTP API: it
# has no resources, so the path takes the place of the resource path (always /{proxy+} on REST).
HTTP_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
}


class Api(Construct):
    """`gateway` is the RestApi or the HttpApi (its metrics, its cdk-nag review); `rest_api` the RestApi only,
    for what hangs off a REST stage; `base_url` the URL the functions are told (RUNPLANE_PUBLIC_URL)."""

    def __init__(self, scope: Construct, id: str, *, config: Config, handler: lambda_.Function) -> None:
        super().__init__(scope, id)
        access_logs = logs.LogGroup(self, "access-logs", removal_policy=config.removal_policy)
        handler.add_environment("RUNPLANE_API_TYPE", config.api)  # the events it receives
        if config.cors_origins:
            handler.add_environment("RUNPLANE_CORS_ORIGINS", ",".join(config.cors_origins))
        self.rest_api: apigateway.RestApi | None = None
        if config.api == "rest":
            self.rest_api = self.gateway = self._rest(config, handler, access_logs)
            url, api_id, stage_path = self.rest_api.url, self.rest_api.rest_api_id, f"/{config.stage}"
        else:
            self.gateway, stage = self._http(config, handler, access_logs)
            url, api_id, stage_path = stage.url, self.gateway.api_id, ""  # the $default stage has no path
        CfnOutput(self, "url", value=url, description="Runplane API base URL")
        # The same URL built from the API's id alone, for the functions' environment (the URL agents
        # report to). A REST API's `url` names the stage, which depends on the deployment, the methods and
        # so on the api function: in that function's environment it would be a circular dependency.
        stack = Stack.of(self)
        self.base_url = f"https://{api_id}.execute-api.{stack.region}.{stack.url_suffix}{stage_path}"

    def _rest(
        self, config: Config, handler: lambda_.Function, access_logs: logs.LogGroup
    ) -> apigateway.RestApi:
        return apigateway.LambdaRestApi(
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

    def _http(
        self, config: Config, handler: lambda_.Function, access_logs: logs.LogGroup
    ) -> tuple[apigatewayv2.HttpApi, apigatewayv2.HttpStage]:
        """Payload format 2.0 (smaller than 1.0, read by Powertools' HTTP resolver), on the `$default`
        route and stage: every path and method reaches the function, at the API's own URL."""
        api = apigatewayv2.HttpApi(
            self,
            "http",
            api_name=f"runplane-{config.stage}",
            description="Runplane run API",
            default_integration=integrations.HttpLambdaIntegration(
                "function",
                handler,
                payload_format_version=apigatewayv2.PayloadFormatVersion.VERSION_2_0,
                timeout=Duration.seconds(API_TIMEOUT_SECONDS),
            ),
            create_default_stage=False,  # made below, with throttling and access logs
            cors_preflight=_cors_preflight(config.cors_origins) if config.cors_origins else None,
        )
        stage = apigatewayv2.HttpStage(
            self,
            "default-stage",
            http_api=api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigatewayv2.ThrottleSettings(
                rate_limit=config.api_throttle_rate, burst_limit=config.api_throttle_burst
            ),
            access_log_settings=_AccessLogs(access_logs),
        )
        return api, stage


def _cors_preflight(origins: list[str]) -> apigatewayv2.CorsPreflightOptions:
    """An HTTP API's CORS configuration: what runplane.api.cors answers behind a REST API."""
    return apigatewayv2.CorsPreflightOptions(
        allow_origins=origins,
        allow_methods=[apigatewayv2.CorsHttpMethod[method] for method in cors.ALLOW_METHODS],
        allow_headers=list(cors.ALLOW_HEADERS),
        expose_headers=list(cors.EXPOSE_HEADERS),
        max_age=Duration.seconds(cors.MAX_AGE_SECONDS),
        allow_credentials=False,
    )


@jsii.implements(apigatewayv2.IAccessLogSettings)
class _AccessLogs:
    """An HTTP API stage's JSON access log lines (HTTP_ACCESS_LOG_FORMAT) in `log_group`."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._log_group = log_group

    @property
    def destination(self) -> apigatewayv2.IAccessLogDestination:
        return apigatewayv2.LogGroupLogDestination(self._log_group)

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return apigateway.AccessLogFormat.custom(json.dumps(HTTP_ACCESS_LOG_FORMAT, separators=(",", ":")))
