"""A bedrock runnable's run sends its resources that Converse takes with the prompt, and logs the others."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber
from runplane.adapters import runtimes

from tests.conftest import Api
from tests.integration.test_kinds import MODEL, converse_reply, create, run

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def bedrock() -> Iterator[Stubber]:
    with Stubber(runtimes.bedrock_client()) as stub:
        yield stub


def inline(name: str, content_type: str, data: bytes) -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    return {"name": name, "directory_path": "in", "content": f"data:{content_type};base64,{encoded}"}


def test_images_and_documents_go_with_the_prompt_and_other_types_are_left_out_with_a_log_line(
    api: Api, bedrock: Stubber
) -> None:
    expected = {
        "modelId": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Describe them"},
                    {"image": {"format": "png", "source": {"bytes": PNG}}},
                    {"document": {"format": "pdf", "name": "report 2026 final", "source": {"bytes": PDF}}},
                ],
            }
        ],
    }
    bedrock.add_response("converse", converse_reply([{"text": "A chart and a report."}]), expected)
    runnable = create(api, "bedrock", {"model_id": MODEL, "prompt": "Describe them"})
    resources = [
        {"name": "chart", "resource": inline("chart.png", "image/png", PNG)},
        {"name": "report_2026.final", "resource": inline("r.pdf", "application/pdf", PDF)},
        {"name": "archive", "resource": inline("a.bin", "application/octet-stream", b"\x00\x01")},
    ]
    state = run(api, runnable, resources=resources)
    assert state["status"] == "completed", state["result"]
    bedrock.assert_no_pending_responses()
    lines = api.get(f"/v1/run/{state['id']}/logs").json()["lines"]
    assert [line["message"] for line in lines] == [
        "resource 'archive' (application/octet-stream) is not a type Bedrock takes: not sent"
    ]
