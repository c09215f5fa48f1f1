"""Alarms on what needs a human (dead letters, stuck queues, errors, throttles, API 5xx, agents going
silent) and a dashboard."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigatewayv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from runplane import definitions as defs

from infra.config import Config

# A message older than this on a working queue means its consumer is not keeping up (or is failing).
OLDEST_MESSAGE_ALARM_SECONDS = {defs.DISPATCH.name: 15 * 60, defs.CALLBACKS_QUEUE.name: 26 * 3600}
# Silent async agents are counted over this window: one is that agent's failure (its run says so, or it is
# sent again), `agent_heartbeat_alarm_count` of them in a quarter of an hour is something they share.
AGENT_HEARTBEAT_ALARM_PERIOD = Duration.minutes(15)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: Config,
        queues: dict[str, sqs.Queue],
        functions: dict[str, lambda_.Function],
        api: apigateway.RestApi | apigatewayv2.HttpApi,
    ) -> None:
        super().__init__(scope, id)
        self.topic = self._topic(config)
        self.alarms: list[cloudwatch.Alarm] = []
        for queue in defs.QUEUES:
            metric = queues[queue.name].metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1)
            )
            if queue.max_receive_count is None:  # a dead-letter queue: anything in it needs attention
                self._alarm(f"{queue.name}-not-empty", metric, 0, f"Messages in {queue.name}")
        for name, seconds in OLDEST_MESSAGE_ALARM_SECONDS.items():
            metric = queues[name].metric_approximate_age_of_oldest_message(period=Duration.minutes(5))
            self._alarm(
                f"{name}-oldest-message", metric, seconds, f"Oldest message on {name} older than {seconds} s"
            )
        for name, function in functions.items():
            self._alarm(
                f"{name}-errors", function.metric_errors(period=Duration.minutes(5)), 0, f"{name} errors"
            )
            self._alarm(
                f"{name}-throttles",
                function.metric_throttles(period=Duration.minutes(5)),
                0,
                f"{name} throttled",
            )
        self._alarm("api-5xx", api.metric_server_error(period=Duration.minutes(5)), 0, "API answered 5xx")
        self._alarm(
            "sweeper-item-errors",
            _runplane_metric("SweepErrors"),
            0,
            "The sweeper could not handle a run, delivery or concurrency scope (skipped, tried again later)",
        )
        count = config.agent_heartbeat_alarm_count
        self._alarm(
            "agent-heartbeat-timeouts",
            _runplane_metric("AgentHeartbeatTimeouts", period=AGENT_HEARTBEAT_ALARM_PERIOD),
            count - 1,
            f"At least {count} async agents sent no report within their heartbeat_seconds in 15 minutes "
            "(their runs failed heartbeat_timeout or were sent again): can agents reach RUNPLANE_PUBLIC_URL?",
        )
        self.dashboard = cloudwatch.Dashboard(self, "dashboard", dashboard_name=f"runplane-{config.stage}")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Runs",
                left=[_runplane_metric(n) for n in ("RunsCreated", "RunsFinished", "RunsFailed")],
            ),
            cloudwatch.GraphWidget(
                title="Callbacks",
                left=[
                    _runplane_metric(n) for n in ("CallbackAttempts", "CallbacksSucceeded", "CallbacksDead")
                ],
            ),
            cloudwatch.GraphWidget(title="API", left=[api.metric_count(), api.metric_server_error()]),
            cloudwatch.GraphWidget(
                title="Async agents given up (silent) and timed out",
                left=[_runplane_metric(n) for n in ("AgentHeartbeatTimeouts", "AgentTimeouts")],
            ),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24),
        )

    def _topic(self, config: Config) -> sns.ITopic | None:
        if config.alarm_topic_arn:
            return sns.Topic.from_topic_arn(self, "alarm-topic", config.alarm_topic_arn)
        if not config.alarm_email:
            return None
        topic = sns.Topic(self, "alarms", enforce_ssl=True)
        topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        return topic

    def _alarm(self, name: str, metric: cloudwatch.Metric, above: float, description: str) -> None:
        alarm = metric.create_alarm(
            self,
            name,
            alarm_description=description,
            threshold=above,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if self.topic is not None:
            alarm.add_alarm_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)


def _runplane_metric(name: str, period: Duration | None = None) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="Runplane",
        metric_name=name,
        dimensions_map={"service": "runplane"},
        statistic="Sum",
        period=period or Duration.minutes(5),
    )
