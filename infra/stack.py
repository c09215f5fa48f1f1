"""The Runplane stack: everything the local stack emulates, built from `runplane.definitions`."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct
from runplane import definitions as defs

from infra.api import Api
from infra.config import Config
from infra.functions import Functions
from infra.monitoring import Monitoring
from infra.nag import suppress_reviewed_findings
from infra.queues import Queues
from infra.storage import Storage
from infra.tables import Tables
from infra.tracing import Tracing


class RunplaneStack(Stack):
    def __init__(self, scope: Construct, id: str, *, code: lambda_.Code, **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)
        config = Config.from_context(self.node)
        tables = Tables(self, "tables", config)
        queues = Queues(self, "queues", config)
        storage = Storage(self, "storage", config)
        functions = Functions(
            self,
            "functions",
            config=config,
            code=code,
            tables=tables.by_name,
            queues=queues.by_name,
            bucket=storage.bucket,
        )
        api = Api(self, "api", config=config, handler=functions.by_name["api"])
        if api.rest_api is not None:  # only a REST stage traces requests
            Tracing(self, "tracing", config=config, api=api.rest_api)
        # where async agents report (runplane.settings.Settings.public_url): a custom domain, or the stage
        functions.add_environment("RUNPLANE_PUBLIC_URL", config.custom_public_url or api.base_url)
        Monitoring(
            self,
            "monitoring",
            config=config,
            queues=queues.by_name,
            functions=functions.by_name,
            api=api.gateway,
        )
        # The names the `runplane` CLI needs (keys, callbacks) as outputs, keyed by their environment variable.
        names = {t.env_var: tables.by_name[t.name].table_name for t in defs.TABLES}
        names |= {q.env_var: queues.by_name[q.name].queue_url for q in defs.QUEUES}
        for env_var, value in names.items():
            CfnOutput(self, env_var.replace("_", ""), value=value, description=env_var)
        suppress_reviewed_findings(
            self,
            roles=[f.role for f in functions.by_name.values()],  # type: ignore[misc]
            presigner=functions.presigner,
            bucket=storage.bucket,
            api=api.gateway,
        )
