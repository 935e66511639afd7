"""Every instrumentation convention spanpipe reads, one module each (see `semconv.convention`).
Key lists are read in this order."""

from __future__ import annotations

from spanpipe.semconv.convention import Convention
from spanpipe.semconv.conventions import (agentlightning, agentops, frameworks, genai, langsmith, litellm, logfire,
                                          openinference, openllmetry)

ALL: tuple[Convention, ...] = (
    genai.CONVENTION,
    agentlightning.CONVENTION,
    litellm.CONVENTION,
    openinference.CONVENTION,
    openllmetry.CONVENTION,
    agentops.CONVENTION,
    logfire.CONVENTION,
    langsmith.CONVENTION,
    frameworks.CONVENTION,
)
