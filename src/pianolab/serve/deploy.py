"""Who answers a request: the champion alone, the champion with the challenger in shadow, or a
fixed share of clients sent to the challenger (sticky: a client id always lands on the same side).

In `shadow` mode the challenger predicts every request after the answer has been sent (clients never
see it); in `split` mode the model that did not answer predicts in shadow too, so that every
performance has both predictions and live comparisons stay paired.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pianolab.errors import PianolabError
from pianolab.registry import Registry

MODES: Registry[str] = Registry("deployment mode")
MODES.add("champion", "the champion answers; nothing else runs")
MODES.add("shadow", "the champion answers; the challenger predicts every request unseen")
MODES.add("split", "a fixed share of clients (sticky per client id) gets the challenger; the other model "
                   "predicts in shadow")


def bucket(client: str, salt: str = "pianolab-split") -> float:
    """A client's fixed position in [0, 1): the same client id always gets the same one."""
    return int.from_bytes(hashlib.sha256(f"{salt}|{client}".encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class Deployment:
    mode: str = "champion"
    share: float = 0.0  # split mode: the share of clients the challenger answers

    def __post_init__(self):
        MODES.get(self.mode)
        if not 0.0 <= self.share <= 1.0:
            raise PianolabError(f"--share {self.share}: must lie in [0, 1]")
        if self.mode == "split" and self.share == 0.0:
            raise PianolabError("split mode needs --share > 0")
        if self.mode != "split" and self.share:
            raise PianolabError(f"--share applies to split mode only (mode is {self.mode})")

    def route(self, client: str, has_challenger: bool) -> tuple[str, list[str]]:
        """('champion' or 'challenger' answering, the aliases that predict in shadow)."""
        if self.mode == "champion" or not has_challenger:
            return "champion", []
        if self.mode == "shadow":
            return "champion", ["challenger"]
        return ("challenger", ["champion"]) if bucket(client) < self.share else ("champion", ["challenger"])
