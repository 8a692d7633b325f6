"""Run the explorers' JavaScript (crossvit/widgets/explorer.js) under node on an explorer's packet: the tests hold
what the browser computes equal to what Python computes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crossvit.widgets.base import ESM
from crossvit.widgets.packet import to_base64

NODE = shutil.which("node")
HARNESS = Path(__file__).resolve().parent / "js" / "explorer_harness.mjs"
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (Node 20 runs the explorers' JavaScript)")


def run_js(packet: dict[str, Any], steps: list[dict[str, Any]], timeout: float = 600,
           cache_limit: int | None = None) -> list[Any]:
    """The result of each step (see tests/js/explorer_harness.mjs) on ``packet`` (``cache_limit``: bytes the front
    end may keep in its cache, instead of its own limit)."""
    request = {"module": str(ESM), "packet": to_base64(packet), "steps": steps}
    if cache_limit is not None:
        request["cache_limit"] = cache_limit
    text = json.dumps(request)
    done = subprocess.run([NODE, str(HARNESS)], input=text.encode(), capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"node failed:\n{done.stderr.decode()[-4000:]}")
    return json.loads(done.stdout)
