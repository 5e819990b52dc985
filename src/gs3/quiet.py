"""Keep dependencies' start-up noise out of the `gs3` command's output, and nothing else.

Each filter names one message of one dependency (by logger and text, or by warning category and text), so
every other warning and log line still shows. What is dropped, and why it is noise for a gs3 user:

- Lightning's "💡 Tip: ..." lines advertising its cloud products (litlogger, litmodels).
- Lightning's "TPU available: False, using: 0 TPU cores" (and the same for HPUs): a device gs3 does not
  use and the machine does not have. "GPU available ..." stays: it says where the run happens.
- Lightning's "`Trainer.fit` stopped: `max_steps=N` reached." / "`max_epochs=1` reached.": gs3 prints its
  own summary line, and gs3 runs the whole training as one long Lightning epoch (gs3.train.sampling), so
  "max_epochs=1" would contradict the configured optim.epochs.
- torch.fx's "is_fx_tracing will return true for both fx.symbolic_trace and torch.export ..." logged at
  the first forward of `nn.MultiheadAttention` (torch's own call to its deprecated function).
- torch's FutureWarning "`isinstance(treespec, LeafSpec)` is deprecated ..." raised when Lightning
  flattens a training step's output with its own copy of torch's pytree code.

Installed by `gs3.cli.main`, not on import: a program using gs3 as a library keeps its logging as it set it.
"""

from __future__ import annotations

import logging
import warnings

# Loggers Lightning's rank-zero messages go through (which one depends on import order).
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
)
LIGHTNING_NOISE = (
    "💡 Tip:",
    "TPU available: False,",
    "HPU available: False,",
    "`Trainer.fit` stopped: `max_steps=",
    "`Trainer.fit` stopped: `max_epochs=",
)
TORCH_FX_LOGGER = "torch.fx._symbolic_trace"
TORCH_FX_NOISE = ("is_fx_tracing will return true for both fx.symbolic_trace and torch.export",)
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not message.startswith(self.prefixes)


def _add_once(logger: logging.Logger, new: DropMessages) -> None:
    if not any(isinstance(f, DropMessages) and f.prefixes == new.prefixes for f in logger.filters):
        logger.addFilter(new)


def quiet_dependencies() -> None:
    """Install the filters above (idempotent). Logger filters apply where a record is created, so they
    sit on the loggers that create these records (before or after the libraries are imported)."""
    for name in LIGHTNING_LOGGERS:
        _add_once(logging.getLogger(name), DropMessages(LIGHTNING_NOISE))
    _add_once(logging.getLogger(TORCH_FX_LOGGER), DropMessages(TORCH_FX_NOISE))
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)
