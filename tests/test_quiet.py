"""Dependencies' start-up noise is kept out of the `gs3` command's output, precisely: other warnings and log
lines of the same libraries still show — gs3.quiet and gs3.cli."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

from gs3.quiet import TORCH_FX_LOGGER, quiet_dependencies

REPO = Path(__file__).resolve().parents[1]
NOISE = ("💡", "Tip:", "TPU available", "is_fx_tracing", "LeafSpec", "`Trainer.fit` stopped")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def collected(logger: logging.Logger, emit) -> list[str]:
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return handler.messages


def test_lightning_tips_and_absent_devices_are_dropped_other_lines_kept():
    import lightning.pytorch  # noqa: F401  (sets the logger its rank-zero messages go through)
    import lightning_utilities.core.rank_zero as rank_zero
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    quiet_dependencies()
    quiet_dependencies()  # idempotent
    messages = collected(
        rank_zero.log,
        lambda: [
            rank_zero_info(message)
            for message in (
                "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
                "TPU available: False, using: 0 TPU cores",
                "GPU available: False, used: False",
                "`Trainer.fit` stopped: `max_steps=3` reached.",
                "`Trainer.fit` stopped: No training batches.",
                "Restoring states from the checkpoint path at x.ckpt",
            )
        ],
    )
    assert messages == [
        "GPU available: False, used: False",
        "`Trainer.fit` stopped: No training batches.",
        "Restoring states from the checkpoint path at x.ckpt",
    ]
    assert sum(isinstance(f, logging.Filter) for f in rank_zero.log.filters) == 1


def test_torch_fx_tracing_notice_is_dropped_other_torch_fx_warnings_kept():
    import torch.fx._symbolic_trace as symbolic_trace

    quiet_dependencies()
    logger = logging.getLogger(TORCH_FX_LOGGER)

    def emit() -> None:
        symbolic_trace.is_fx_tracing_warning.cache_clear()  # it warns once per process
        assert symbolic_trace.is_fx_tracing() is False  # what nn.MultiheadAttention calls
        logger.warning("some other torch.fx warning")

    assert collected(logger, emit) == ["some other torch.fx warning"]


def test_leafspec_deprecation_is_dropped_other_future_warnings_kept():
    from torch.utils._pytree import LeafSpec

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LeafSpec()  # the real warning, as Lightning's pytree copy triggers it
        assert any("LeafSpec" in str(w.message) for w in caught)  # it does warn without the filter
        caught.clear()
        quiet_dependencies()
        LeafSpec()
        warnings.warn("some other future change", FutureWarning, stacklevel=1)
        warnings.warn("a warning that matters", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["some other future change", "a warning that matters"]


RUN = """
import sys, warnings
from gs3.model import GS3
original = GS3.forward
def forward(self, batch):
    warnings.warn("a warning that matters", UserWarning)
    return original(self, batch)
GS3.forward = forward
from gs3.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_pretrain_output_has_no_dependency_noise_but_still_shows_warnings(tmp_path):
    from test_train import tiny_overrides

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN))
    overrides = tiny_overrides(tmp_path / "cache", ["optim.max_steps=2", "trainer.checkpoint_every=100"])
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "pretrain",
            "--config",
            "demo",
            *overrides,
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "gs3 pretrain: 2 steps" in output
    assert "GPU available" in output  # Lightning's other information stays
    assert "a warning that matters" in output
    assert not [line for line in output.splitlines() if any(noise in line for noise in NOISE)], output
