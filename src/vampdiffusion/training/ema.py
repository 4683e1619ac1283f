"""Exponential moving average of the trainable weights, updated after every optimizer step.

Only trainable floating-point tensors are averaged (frozen ones equal the live weights by
definition); `full_state_dict` overlays the averages on the live state so the export is a
complete model. The averages live in checkpoints and are never re-initialised from the live
weights on resume.
"""

from __future__ import annotations

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
        params = dict(model.named_parameters())
        self.shadow = {n: params[n].detach().clone().float() for n in self.names}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        # decay_n = min(decay, (1 + n) / (10 + n)): short runs get a usable average
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        shadow = [self.shadow[n] for n in self.names]
        live = [params[n].detach().float() for n in self.names]
        # ema <- decay * ema + (1 - decay) * w
        torch._foreach_lerp_(shadow, live, 1.0 - self.current_decay())
        self.num_updates += 1

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with every averaged tensor replaced by its EMA (in the live dtype)."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for n in self.names:
            state[n] = self.shadow[n].to(state[n].dtype).clone()
        return state

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {n: t for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.names) - set(state["shadow"]))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} trainable tensor(s), e.g. {missing[:5]}; "
                             "was the checkpoint written by another phase? use --init-from instead of --resume")
        self.num_updates = int(state["num_updates"])
        for n in self.names:
            self.shadow[n].copy_(state["shadow"][n])
