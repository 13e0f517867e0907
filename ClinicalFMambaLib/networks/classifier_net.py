"""Compact residual CNN for 2D brain-MRI tumour classification.

Grey input (1 channel), square ``input_size``. Four stages of basic residual blocks, each
halving the resolution, then global average pooling and a linear head. The last stage's
feature map (input_size / 16 on a side) is the Grad-CAM layer.

``TumourEnsemble`` averages the logits of members trained alike from different seeds. It is
exactly one wider network (the members' feature maps side by side, their heads side by side
divided by the member count), so the class activation map and the scope guard's feature
statistics read it as they read a single ``TumourNet``.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_ARCH = {"stem": 24, "widths": [32, 64, 128, 256], "depths": [1, 1, 2, 1], "dropout": 0.2}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a (projected when needed) identity shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # Zero-init the last BN so every block starts as identity: stabler from-scratch training.
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.shortcut(x))


class TumourNet(nn.Module):
    """Stem (stride 2) + 4 residual stages (strides 1, 2, 2, 2) -> pooled logits."""

    def __init__(self, num_classes: int, stem: int = 24, widths: list[int] | None = None,
                 depths: list[int] | None = None, dropout: float = 0.2) -> None:
        super().__init__()
        widths = widths or DEFAULT_ARCH["widths"]
        depths = depths or DEFAULT_ARCH["depths"]
        if len(widths) != len(depths):
            raise ValueError("widths and depths must have the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        stages, c_in = [], stem
        for index, (width, depth) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(c_in, width, 1 if index == 0 else 2)]
            blocks += [BasicBlock(width, width, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature map of every residual stage; the last one is the Grad-CAM layer."""
        outputs = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage feature map (the Grad-CAM layer)."""
        return self.stages(self.stem(x))

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))

    def class_weights(self) -> torch.Tensor:
        """(classes, channels) weights of the pooled last-stage features: the CAM weights."""
        return self.head[-1].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify_features(self.features(x))


class TumourEnsemble(nn.Module):
    """Members of one architecture; the logits are their mean."""

    def __init__(self, num_classes: int, members: int, **arch) -> None:
        super().__init__()
        if members < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(TumourNet(num_classes, **arch) for _ in range(members))

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per stage, the members' feature maps concatenated along the channels."""
        per_member = [member.stage_outputs(x) for member in self.members]
        return [torch.cat(stage, dim=1) for stage in zip(*per_member)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member.features(x) for member in self.members], dim=1)

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        chunks = features.chunk(len(self.members), dim=1)
        return torch.stack([member.classify_features(chunk)
                            for member, chunk in zip(self.members, chunks)]).mean(0)

    def class_weights(self) -> torch.Tensor:
        return torch.cat([member.class_weights() for member in self.members], 1) / len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify_features(self.features(x))


def build_model(config: dict) -> TumourNet | TumourEnsemble:
    """Network described by a weights config (``classes`` and ``arch``; ``arch["members"]``
    above 1 makes an ensemble)."""
    arch = {**DEFAULT_ARCH, **config.get("arch", {})}
    members = arch.pop("members", 1)
    if members > 1:
        return TumourEnsemble(len(config["classes"]), members, **arch)
    return TumourNet(len(config["classes"]), **arch)
