"""API Gateway (proxy) entry point: an HTTP API's or a REST API's events, as deployed (RUNPLANE_API_TYPE)."""

from runplane.api.app import create_app, serve
from runplane.api.formats import CORRELATION_PATHS
from runplane.observability import logger, metrics
from runplane.settings import get_settings

API_TYPE = get_settings().api_type
app = create_app(API_TYPE)


@logger.inject_lambda_context(correlation_id_path=CORRELATION_PATHS[API_TYPE])
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    return serve(app, event, context)
