"""Grouped models: M members of one architecture (same shapes, own weights) as one module, for packed
training (`pianolab.train.packed`).

`grouped_copy(model)` swaps every Linear, LayerNorm and Conv2d for a grouped twin that reads stacked
weights (M, *shape), as `torch.func.stack_module_state` makes them, through `functional_call`. The
batch is the members' batches one after another, (M*B, ...): a grouped layer views it as (M, B*..., ...)
and multiplies each member's rows by that member's weights in one batched matmul (`bmm`), so
attention stays the ordinary fused kernel over M*B sequences (under `vmap` a pack of 20 ASTs took
65-75 GB and trained slower than one model at a time: most likely the math attention kernel,
materialising every attention matrix; docs/benchmarks.md). Keyed dropout draws each
member's masks from its own key (`pianolab.models.noise`), so member i computes what it computes alone.

Modules that own parameters directly must say they handle the stacked shapes (`GROUP_AWARE`, e.g. the
patch encoder's positional embeddings); a model with any other one, or with buffers, is not grouped.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

GROUP_AWARE: set[type[nn.Module]] = set()  # modules whose own parameters may carry leading member dims


def group_aware(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: `cls` reads its own parameters with any leading member dims (see module doc)."""
    GROUP_AWARE.add(cls)
    return cls


def _members(weight: torch.Tensor, base_ndim: int) -> int:
    """Members in a stacked weight (1 for an ordinary weight of `base_ndim` dims)."""
    return weight.shape[0] if weight.ndim > base_ndim else 1


def _with_bias(y: torch.Tensor, bias: torch.Tensor | None, m: int) -> torch.Tensor:
    """(M, rows, out) plus each member's bias (M, out). Not `baddbmm`: that first copies the broadcast
    bias into the whole output, then the matmul reads it back (on the GPU those copies were ~10 % of a
    packed step); added after `bmm`, compiled, the bias joins the next pointwise kernel."""
    return y if bias is None else y + bias.reshape(m, 1, -1).to(y.dtype)


class GroupedLinear(nn.Module):
    """`nn.Linear` over (M*B, ..., in) with weight (M, out, in), bias (M, out)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = _members(self.weight, 2)
        w = self.weight.reshape(m, *self.weight.shape[-2:])
        y = _with_bias(torch.bmm(x.reshape(m, -1, x.shape[-1]), w.transpose(1, 2)), self.bias, m)
        return y.reshape(*x.shape[:-1], w.shape[1])


class GroupedLayerNorm(nn.Module):
    """`nn.LayerNorm` over (M*B, ..., D) with weight and bias (M, D)."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.shape, self.eps = tuple(norm.normalized_shape), norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, self.shape, None, None, self.eps)
        if self.weight is None:
            return y
        m = _members(self.weight, len(self.shape))
        rows = y.reshape(m, -1, *self.shape)
        rows = rows * self.weight.reshape(m, 1, *self.shape) + self.bias.reshape(m, 1, *self.shape)
        return rows.reshape(y.shape)


class GroupedConv2d(nn.Module):
    """`nn.Conv2d` (no dilation or groups of its own) over (M*B, C, H, W), weight (M, out, C, k, k):
    the patches gathered as rows, then one batched matmul."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.kernel, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = _members(self.weight, 4)
        out = self.weight.shape[-4]
        if any(self.padding):
            x = F.pad(x, (self.padding[1], self.padding[1], self.padding[0], self.padding[0]))
        # the patches as a strided view (N, C, h, w, kh, kw), copied once into rows ordered as F.unfold's
        # columns (eager F.unfold on CUDA launches one im2col kernel per sequence)
        patches = x.unfold(2, self.kernel[0], self.stride[0]).unfold(3, self.kernel[1], self.stride[1])
        b, h, w = x.shape[0] // m, patches.shape[2], patches.shape[3]
        rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(m, b * h * w, -1)
        y = _with_bias(torch.bmm(rows, self.weight.reshape(m, out, -1).transpose(1, 2)), self.bias, m)
        return y.reshape(m * b, h, w, out).permute(0, 3, 1, 2)


GROUPED: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: GroupedLinear, nn.LayerNorm: GroupedLayerNorm,
                                                   nn.Conv2d: GroupedConv2d}


def grouping_problem(model: nn.Module) -> str | None:
    """Why `model` cannot be grouped (None if it can)."""
    if next(model.buffers(), None) is not None:
        return "the model has buffers"
    for name, module in model.named_modules():
        own = next(module.parameters(recurse=False), None)
        if own is None or type(module) in GROUP_AWARE:
            continue
        if type(module) not in GROUPED:
            return f"{name or 'the model'} ({type(module).__name__}) owns parameters no grouped layer reads"
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.dilation != (1, 1)
                                              or module.padding_mode != "zeros" or isinstance(module.padding, str)):
            return f"{name} is a grouped, dilated or specially padded convolution"
    return None


def grouped_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose layers read stacked member weights (call it with `functional_call`,
    parameters named as in `model`). Check `grouping_problem(model)` first."""
    copied = copy.deepcopy(model)
    for parent in list(copied.modules()):
        for name, child in parent.named_children():
            if type(child) in GROUPED:
                setattr(parent, name, GROUPED[type(child)](child))
    return copied
