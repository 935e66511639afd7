"""A collector with the llm_gateway receiver in front of a fake OpenAI-compatible upstream, for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai

from collector import Collector, free_port, wait_for
from examples.fake_openai import FakeOpenAI
from spanpipe.warehouse.warehouse import Warehouse


class Gateway(Collector):
    """A collector with `otlp` and `llm_gateway` in its traces pipeline (rollout, reward, batch → duckdb)."""

    def __init__(self, tmp: Path, upstream: FakeOpenAI, processors: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, **gateway: Any) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp, processors=processors or {"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}},
                         env=env)
        self.gateway_port = free_port()
        self.config["receivers"]["llm_gateway"] = {
            "endpoint": f"127.0.0.1:{self.gateway_port}", "upstreams": [{"base_url": upstream.base_url}], **gateway}
        self.config["service"]["pipelines"]["traces"]["receivers"].append("llm_gateway")
        self.rewrite()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def client(self, path: str = "", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}{path}/v1", **{"api_key": "client-key", "max_retries": 0, **kw})

    def spans(self, where: str = "TRUE") -> list[dict[str, Any]]:
        rows = Warehouse.connect(self.query_url).sql(
            f"SELECT trace_id, span_id, parent_span_id, name, status_code, status_message, rollout_id, attempt_id, "
            f"scope_name, attributes::VARCHAR AS attributes FROM spans WHERE {where} ORDER BY start_time_unix_nano")
        out = rows.to_pylist()
        for r in out:
            r["attributes"] = json.loads(r["attributes"])
        return out

    def gateway_spans(self, n: int, timeout: float = 15) -> list[dict[str, Any]]:
        where = "scope_name = 'spanpipe.llm_gateway'"
        wait_for(lambda: len(self.spans(where)) >= n, timeout, f"{n} gateway span(s)")
        return self.spans(where)
