"""What keeps a run's progress inside DynamoDB's limits: long messages and fields are cut, and the end's
event holds a short error however long the run's own is."""

from __future__ import annotations

from runplane.domain.events import MAX_LINE_CHARS
from runplane.logic import services

from tests.conftest import Api, drain
from tests.integration.test_watch import events_page, log_pages, run_state, scripted, start  # noqa: F401


def test_a_log_lines_fields_over_a_line_are_cut_not_lost(api: Api, scripted: str) -> None:  # noqa: F811
    run_id = start(api, scripted, {"script": [{"log": "small", "fields": {"blob": "f" * 500_000}}]})
    drain("worker")
    assert run_state(api, run_id)["status"] == "completed"
    [line] = [line for page in log_pages(api, run_id) for line in page["lines"]]
    assert line["message"] == "small"
    assert set(line["fields"]) == {"cut"}
    assert "500011 characters" in line["fields"]["cut"]


def test_the_end_event_holds_a_short_error_and_the_result_the_whole_one(
    api: Api,
    account,
    scripted: str,  # noqa: F811
) -> None:
    message = "x" * 300_000
    run_id = start(api, scripted, {"script": [{"raise": message}]})
    drain("worker")
    state = run_state(api, run_id)
    assert state["status"] == "failed"
    assert state["result"]["error"]["message"] == f"ValueError: {message}"  # kept whole (in S3)
    [ended] = [e for e in events_page(api, run_id)["events"] if e.get("reason") == "ended"]
    assert len(ended["error"]["message"]) < MAX_LINE_CHARS + 100
    assert ended["error"]["code"] == "runnable_exception"
    record = services.services().runs.get(account.account_id, run_id, consistent=True)
    assert record is not None
    assert record.outcome_ref is not None  # the outcome did not fit beside the item's other documents
