"""What every route reads: the scheduler, the tokenizer, the served model's name and limits,
the API key and the metrics (one object, made once by `create_app`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from v4c.runtime.scheduler import Scheduler
from v4c.runtime.tokenizer import V4Tokenizer
from v4c.serve.errors import APIError
from v4c.serve.metrics import Metrics


@dataclass
class ServeState:
    scheduler: Scheduler
    tokenizer: V4Tokenizer
    model: str  # the name clients ask for (--served-model-name)
    api_key: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    max_body: int = 8 << 20  # bytes a request body may have (413 past it)

    @property
    def max_seq(self) -> int:
        return self.scheduler.max_seq

    def check_model(self, name: str) -> None:
        if name != self.model:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                           f"{self.model!r}", param="model", code="model_not_found")  # fmt: skip
