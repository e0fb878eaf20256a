"""Counting a module's forward passes (the tests that prove a reference model never runs)."""

from __future__ import annotations

import torch


class ForwardCounter:
    """Counts forward passes through a module, split by whether autograd was recording."""

    def __init__(self, module):
        self.grad = self.no_grad = 0
        module.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        if torch.is_grad_enabled():
            self.grad += 1
        else:
            self.no_grad += 1
