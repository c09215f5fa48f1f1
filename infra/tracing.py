"""X-Ray sampling of a REST API's requests: the first each second, then `trace_fixed_rate` of the rest.

A REST stage traces (infra/api.py) and decides for each request by the account's sampling rules; the api
function, with active tracing, follows its decision. An HTTP API does not trace: the api function then
decides itself, as the functions that queues and the schedule invoke do, at Lambda's fixed 1 per second
and 5 % of the rest, which no sampling rule changes."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_xray as xray
from constructs import Construct

from infra.config import Config

PRIORITY = 1000  # before the account's Default rule (10000); the rule matches this stage only


class Tracing(Construct):
    def __init__(self, scope: Construct, id: str, *, config: Config, api: apigateway.RestApi) -> None:
        super().__init__(scope, id)
        xray.CfnSamplingRule(
            self,
            "api",
            sampling_rule=xray.CfnSamplingRule.SamplingRuleProperty(
                rule_name=f"runplane-{config.stage}"[:32],
                priority=PRIORITY,
                reservoir_size=1,
                fixed_rate=config.trace_fixed_rate,
                service_name=f"{api.rest_api_name}/{config.stage}",
                service_type="AWS::ApiGateway::Stage",
                host="*",
                http_method="*",
                url_path="*",
                resource_arn="*",
                version=1,
            ),
        )
