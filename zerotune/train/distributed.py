"""Training on several GPUs or machines through accelerate, around the same loop.

`accelerate launch` (or torchrun) starts one process per device. Every process builds the same model
and the same packed steps and trains on every world-th example of each step; the engine accelerate
was configured with (DDP, FSDP, DeepSpeed) adds the gradients up, so a step means the same with any
number of processes. Started alone (no WORLD_SIZE in the environment, the usual case) nothing here
does anything: no Accelerator, no wrapper, the loop runs exactly as it does on one device.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from zerotune.data.packing import PackedRow
from zerotune.train.loss import RowLoss, row_loss

_MOE_KEYS = ("n_routed_experts", "num_experts", "num_local_experts")


def launched() -> bool:
    """True in a process started by `accelerate launch` / torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Dist:
    """This process's place among those training together; one process alone when accelerator is None."""

    accelerator: Any = None
    wrapped: torch.nn.Module | None = None  # the engine's wrapper around RowLoss(model), after prepare()

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def device(self) -> torch.device | None:
        """The device accelerate gave this process (its own GPU); None alone."""
        return self.accelerator.device if self.accelerator else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Weights or optimizer state are split across processes (FSDP, DeepSpeed), not replicated (DDP)."""
        return self.accelerator is not None and self.accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")

    def prepare(self, model: torch.nn.Module, optimizer):
        """Hand the model (as RowLoss) and optimizer to the engine; returns the optimizer to step."""
        if self.accelerator is None:
            return optimizer
        from accelerate.utils import DistributedDataParallelKwargs

        # Buffers (rotary tables) are identical everywhere: broadcasting them would cost a collective in
        # every forward, eval included. MoE experts a step does not route to get no gradient, which DDP
        # must be told to expect.
        moe = any(getattr(getattr(model, "config", None), k, None) for k in _MOE_KEYS)
        self.accelerator.ddp_handler = DistributedDataParallelKwargs(broadcast_buffers=False,
                                                                     find_unused_parameters=moe)
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if plugin is not None and plugin.deepspeed_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1  # a micro-batch is one packed row
        self.wrapped, optimizer = self.accelerator.prepare(RowLoss(model), optimizer)
        return optimizer

    def loss(self, model, row: PackedRow, device: torch.device) -> torch.Tensor:
        """row_loss, run inside the engine's wrapper when there is one."""
        if self.wrapped is None:
            return row_loss(model, row, device)
        return self.wrapped(row.input_ids.to(device), row.position_ids.to(device), row.labels.to(device))

    @contextlib.contextmanager
    def micro_batch(self, last: bool):
        """Around a micro-batch's forward and backward: only the step's last one reduces gradients
        across processes (DeepSpeed also takes its optimizer step there)."""
        if self.wrapped is None or last:
            yield
            return
        self.accelerator.gradient_state._set_sync_gradients(False)
        try:
            with self.accelerator.no_sync(self.wrapped):
                yield
        finally:
            self.accelerator.gradient_state._set_sync_gradients(True)

    def backward(self, loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
        """Backward; with several processes the engine averages gradients over them, but the loss is
        already divided by the answer tokens of the whole step, so the average is turned back into a sum."""
        if self.accelerator is not None:
            loss = loss * self.world
        if scaler is not None:
            loss = scaler.scale(loss)
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip(self, params: list[torch.Tensor], max_norm: float) -> None:
        """Clip the gradient norm (FSDP and DeepSpeed measure it across their shards)."""
        if self.accelerator is None:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:  # accelerate recognises FSDP's wrapper by the full parameter list
            self.accelerator.clip_grad_norm_(list(self.wrapped.parameters()), max_norm)

    def all_sum(self, values: list[float]) -> list[float]:
        """The sums over all processes of some numbers."""
        if self.accelerator is None:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, "sum").tolist()

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on one: a signal or a timer must stop or checkpoint
        them all at the same step."""
        return self.all_sum([float(flag)])[0] > 0 if self.accelerator else flag

    def gather(self, obj) -> list | None:
        """Every process's obj, in rank order, on the main process (None elsewhere)."""
        if self.accelerator is None:
            return [obj]
        out = [None] * self.world if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def full_state(self) -> dict[str, torch.Tensor] | None:
        """Every weight, in full, on the main process (FSDP and ZeRO shard them); None elsewhere."""
        state = self.accelerator.get_state_dict(self.wrapped)
        return {k.removeprefix("model."): v for k, v in state.items()} if self.is_main else None

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def end(self) -> None:
        """Leave the process group (without this torch warns on exit)."""
        if self.accelerator is not None:
            self.accelerator.end_training()


def start(device_kind: str) -> Dist:
    """The Dist of this process: an Accelerator when launched with several processes, else none.

    Args:
        device_kind: "cuda", "mps" or "cpu" (hardware.detect_device); on CPU processes talk over gloo.
    """
    if not launched():
        return Dist()
    from accelerate import Accelerator

    return Dist(Accelerator(cpu=device_kind == "cpu"))
