"""ResNet50 in plain torch, for both weight sources, plus the uint8 NHWC export wrapper.

Two variants of the same network: Keras' ResNet50 (conv bias, BN eps 1e-3, stride 2
on the first 1x1 conv of a block) and torchvision's v1.5 (no conv bias, BN eps 1e-5,
stride 2 on the 3x3 conv). Module names follow torchvision, so a torchvision state
dict loads as is and Keras weights are renamed into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ris.embedder.preprocessing import PreprocessSpec

BLOCKS = (3, 4, 6, 3)
GEM_P = 3.0
GEM_EPS = 1e-6


@dataclass(frozen=True)
class Variant:
    """Where the two ResNet50 flavours differ."""

    conv_bias: bool
    bn_eps: float
    stride_on_3x3: bool


KERAS = Variant(conv_bias=True, bn_eps=1e-3, stride_on_3x3=False)
TORCHVISION = Variant(conv_bias=False, bn_eps=1e-5, stride_on_3x3=True)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, variant: Variant) -> None:
        super().__init__()
        bias, eps = variant.conv_bias, variant.bn_eps
        s1, s3 = (1, stride) if variant.stride_on_3x3 else (stride, 1)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=s3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(planes * 4, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=bias),
                nn.BatchNorm2d(planes * 4, eps=eps),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """Returns (embedding [N,2048] GAP, logits [N,1000], gem [N,2048] GeM p=3)."""

    def __init__(self, variant: Variant, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=variant.conv_bias)
        self.bn1 = nn.BatchNorm2d(64, eps=variant.bn_eps)
        self.relu = nn.ReLU(inplace=True)
        # Keras pads with zeros before a 'valid' pool; after ReLU that equals -inf padding.
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 64
        self.layer1 = self._make_layer(64, BLOCKS[0], 1, variant)
        self.layer2 = self._make_layer(128, BLOCKS[1], 2, variant)
        self.layer3 = self._make_layer(256, BLOCKS[2], 2, variant)
        self.layer4 = self._make_layer(512, BLOCKS[3], 2, variant)
        self.fc = nn.Linear(2048, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int, variant: Variant) -> nn.Sequential:
        layers = []
        for block in range(blocks):
            layers.append(Bottleneck(self.inplanes, planes, stride if block == 0 else 1, variant))
            self.inplanes = planes * 4
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, [N, 2048, h/32, w/32]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooling and classifier; run in fp32 even for fp16 models (x**3 overflows fp16)."""
        x = x.float()
        embedding = x.mean(dim=(2, 3))
        gem = x.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
        return embedding, self.fc(embedding), gem

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


class UInt8Model(nn.Module):
    """Wraps the net so the graph takes uint8 NHWC RGB and does colour order + mean/std."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, net: ResNet50, spec: PreprocessSpec, half: bool = False) -> None:
        super().__init__()
        self.net = net
        self.dtype = torch.float16 if half else torch.float32
        if half:  # backbone in fp16; normalisation, pooling and fc stay fp32
            fuse_batchnorm(net)  # BN running_var reaches 8e4 > fp16 max: fold it first
            for name, module in net.named_children():
                if name != "fc":
                    module.half()
        self.flip = spec.color_order == "BGR"
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        inv_std = [1.0 / s for s in spec.std]
        self.register_buffer("inv_std", torch.tensor(inv_std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        if self.flip:
            x = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1)
        x = (x - self.mean) * self.inv_std
        return self.net.head(self.net.features(x.to(self.dtype)))


def fuse_batchnorm(net: ResNet50) -> None:
    """Fold every BatchNorm into the conv before it, in place (eval semantics)."""
    pairs: list[tuple[nn.Module, str, str]] = [(net, "conv1", "bn1")]
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in layer:
            assert isinstance(block, Bottleneck)
            pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        setattr(parent, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
        setattr(parent, bn_name, nn.Identity())


def keras_name_map() -> dict[str, str]:
    """Map Keras layer names (conv1, res2a_branch2a, bn2a_branch1, ...) to module paths."""
    names = {"conv1": "conv1", "bn_conv1": "bn1", "fc1000": "fc"}
    for stage, blocks in zip(range(2, 6), BLOCKS, strict=True):
        for block in range(blocks):
            letter = "abcdef"[block]
            base = f"layer{stage - 1}.{block}"
            for branch, (conv, bn) in {
                "2a": ("conv1", "bn1"),
                "2b": ("conv2", "bn2"),
                "2c": ("conv3", "bn3"),
                "1": ("downsample.0", "downsample.1"),
            }.items():
                names[f"res{stage}{letter}_branch{branch}"] = f"{base}.{conv}"
                names[f"bn{stage}{letter}_branch{branch}"] = f"{base}.{bn}"
    return names


_KERAS_PARAM = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def keras_state_dict(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename and transpose Keras weights ('layer/param') into a torch state dict."""
    names = keras_name_map()
    state: dict[str, torch.Tensor] = {}
    for key, array in weights.items():
        layer, param = key.split("/")
        target = f"{names[layer]}.{_KERAS_PARAM[param]}"
        if param == "kernel":
            # Conv [h, w, in, out] -> [out, in, h, w]; Dense [in, out] -> [out, in].
            array = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T
        state[target] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def load_state(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load strictly, ignoring only BN's num_batches_tracked; shapes must all match."""
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise ValueError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in given.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} != {tuple(expected[key].shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"{key} has NaN/inf values")
    net.load_state_dict(given, strict=False)
    net.eval()


def build_keras(weights: dict[str, np.ndarray]) -> ResNet50:
    net = ResNet50(KERAS)
    load_state(net, keras_state_dict(weights))
    return net


def build_torchvision(state: dict[str, torch.Tensor]) -> ResNet50:
    net = ResNet50(TORCHVISION)
    load_state(net, state)
    return net
