"""What every provider module produces, whatever its wire format.

One module per wire format sits here: :mod:`transforms.llm.providers.openai` (OpenAI and every
OpenAI-compatible server: vLLM, gateways, the simulator) and
:mod:`transforms.llm.providers.openai_batch` (its Files and Batches API). A provider module
holds the request body, the response and usage parsing, the error mapping to
:mod:`transforms.errors`, the reading of its limit headers into
:class:`~transforms.limits.limiter.AnnouncedLimit`, and its Batch API line format; the layers
above it (:mod:`transforms.llm.flow`, the cache, the repair, the answerer) never see the wire.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

#: The fate of one line of a batch's output: answered, failed for good, or worth another round.
OK = "ok"
PERMANENT = "permanent"
RETRYABLE = "retryable"


@dataclasses.dataclass(frozen=True)
class LineOutcome:
    """One line of a batch's output or error file, classified.

    Attributes:
      custom_id: The request's id.
      kind: ``ok``, ``permanent`` (the same request fails again: a dead letter, as online) or
        ``retryable`` (5xx, 429, 408/409, a malformed answer, a line the batch never ran).
      status: The line's HTTP status (None for a line never run).
      code: The provider's error code, when there is one.
      message: The provider's error message (redacted), when there is one.
      completion: For ``ok``: content, model, finish_reason and the usage's token counts.
      request_id: The provider's id of the line's answer.
    """
    custom_id: str
    kind: str
    status: Optional[int] = None
    code: Optional[str] = None
    message: str = ""
    completion: Optional[Dict[str, Any]] = None
    request_id: Optional[str] = None



