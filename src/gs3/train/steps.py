"""Manual optimisation shared by pre-training (GS3Module) and fine-tuning (FinetuneModule).

Optimisation is manual (Lightning's `automatic_optimization = False`) so that a non-finite loss or gradient
norm skips the optimizer *and* scheduler step on every rank together, and is counted; that many in a row
(trainer.max_nonfinite_in_row) stop the run. Randomness inside the model is reseeded from (seed, step, rank)
at each step and the data of a step is a pure function of (seed, step) (gs3.train.sampling), so a resumed run
continues exactly without saving generator states.

A subclass sets `self.config` (with `.trainer`, a gs3.config.TrainerConfig, and `.optim.grad_clip` /
`.optim.max_steps`) and, in `training_step`, calls `begin_step` and then `optimize(loss)`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

from gs3.errors import GS3Error
from gs3.train.sampling import mix_seed


class NonFiniteLossError(GS3Error):
    """Too many non-finite losses in a row: the run diverged."""


class SteppedModule(L.LightningModule):
    config: Any

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.batches_done = 0  # batches consumed by the run (skipped steps included): the data position
        self.resume_batches = 0  # set from a checkpoint; the data module skips that many batches
        self.skipped_data: Counter = Counter()  # bad samples skipped by the datasets, by reason (this rank)

    def total_steps(self) -> int:
        if self.config.optim.max_steps > 0:
            return self.config.optim.max_steps
        # Not trainer.estimated_stepping_batches: it would build the train dataloader before a checkpoint
        # restores the data position. The data module knows the run's length from the dataset already.
        return max(1, self.trainer.datamodule.total_batches(self.trainer.world_size))

    def begin_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.batches_done = batch_idx + 1  # one long epoch (gs3.train.sampling): batch_idx counts the run
        skipped = batch.get("skipped", {})
        if skipped:  # running totals by reason (this rank's), beside the run's non-finite steps
            self.skipped_data.update(skipped)
            self._write_scalars(
                {f"data/skipped/{reason}": float(n) for reason, n in self.skipped_data.items()}
            )
        seed = mix_seed(self.config.trainer.seed, self.global_step, batch_idx, self.global_rank)
        torch.manual_seed(seed)  # model-side randomness (e.g. dropout) is a function of (seed, step, rank)

    def optimize(self, loss: Tensor) -> tuple[Tensor, float] | None:
        """Backward, clip and step (optimizer and scheduler); (gradient norm, lr used) or None if skipped."""
        if not self._all_ranks_finite(loss):
            self._skip("losses")
            return None
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        clip = self.config.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.parameters() if p.grad is not None], clip if clip > 0 else float("inf")
        )
        if not self._all_ranks_finite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            self._skip("gradient norms")
            return None
        lr = self._lr()  # the rate this step uses (the scheduler moves it on below)
        optimizer.step()
        self.lr_schedulers().step()
        self.nonfinite_in_row = 0
        return grad_norm, lr

    def _all_ranks_finite(self, value: Tensor) -> bool:
        finite = torch.isfinite(value.detach()).all().float().reshape(1)
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def _skip(self, what: str) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        limit = self.config.trainer.max_nonfinite_in_row
        self._write_scalars({"train/nonfinite_skipped": float(self.nonfinite_total)})
        if self.nonfinite_in_row >= limit:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite {what} in a row at step {self.global_step} "
                f"(trainer.max_nonfinite_in_row={limit}): the run diverged; lower optim.lr or check the data"
            )

    def _write_scalars(self, scalars: dict[str, float]) -> None:
        # Straight to the logger at the optimizer step: Lightning's self.log would repeat stale values
        # at every step under manual optimisation.
        if self.global_rank == 0 and self.logger is not None:
            self.logger.log_metrics(scalars, step=self.global_step)

    def _lr(self) -> float:
        return float(self.optimizers().param_groups[0]["lr"])

    # --- checkpoint extras --------------------------------------------------------------------------------
    def step_state(self) -> dict[str, Any]:
        """The run position and counters a checkpoint keeps (under checkpoint["gs3"])."""
        return {
            "step": int(self.global_step),
            "batches_done": int(self.batches_done),
            "skipped_data": dict(self.skipped_data),
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_in_row": self.nonfinite_in_row,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extras = checkpoint.get("gs3", {})
        self.nonfinite_total = int(extras.get("nonfinite_total", 0))
        self.nonfinite_in_row = int(extras.get("nonfinite_in_row", 0))
        self.batches_done = self.resume_batches = int(extras.get("batches_done", 0))
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "sampler", None) is not None:
            datamodule.sampler.resume_at(self.resume_batches)  # a loader built before the restore
        self.skipped_data = Counter(extras.get("skipped_data", {}))
