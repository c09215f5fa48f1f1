"""`client.callbacks`: the account's signing secret and a run's callback deliveries."""

from __future__ import annotations

from runplane_client import endpoints as e
from runplane_client.models import CallbackDelivery, CallbackDeliveryPage, CallbackSecret
from runplane_client.transport import Transport


class Callbacks:
    def __init__(self, transport: Transport):
        self._transport = transport

    def secret(self) -> CallbackSecret:
        """The `whsec_…` secret that signs callbacks (needs an admin key)."""
        return CallbackSecret.model_validate(self._transport.call(e.CALLBACK_SECRET))

    def rotate_secret(self) -> CallbackSecret:
        """A new secret; the previous one keeps signing too until `previous_valid_until`."""
        return CallbackSecret.model_validate(self._transport.call(e.ROTATE_CALLBACK_SECRET))

    def deliveries(self, run_id: str) -> list[CallbackDelivery]:
        """Each callback message sent for the run, with every attempt."""
        answer = self._transport.call(e.RUN_CALLBACKS, path={"run_id": run_id})
        return CallbackDeliveryPage.model_validate(answer).items

    def redeliver(self, run_id: str) -> CallbackDelivery:
        """Send the run's end callback again now (same `webhook-id`)."""
        answer = self._transport.call(e.REDELIVER_CALLBACK, path={"run_id": run_id})
        return CallbackDelivery.model_validate(answer)
