"""API Gateway (REST, proxy) entry point."""

from aws_lambda_powertools.logging import correlation_paths

from runplane.api.app import create_app, serve
from runplane.observability import logger, metrics

app = create_app()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    return serve(app, event, context)
