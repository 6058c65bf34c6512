"""Registry of MONAI image backbones: how to build each one and how to run its trunk to a spatial feature map.

Each entry is a :class:`BackboneSpec` (timm-style ``@register_backbone``). The MONAI network is kept whole, minus its
classification head, so that a MONAI ``state_dict`` (e.g. a local pretrained file) loads into it key for key; the
``features`` function runs the convolutional trunk (or the ViT blocks) without pooling, so every output position is an
image region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.networks import nets
from torch import nn

__all__ = ["BackboneSpec", "get_backbone", "list_backbones", "register_backbone"]


@dataclass(frozen=True)
class BackboneSpec:
    """How one backbone is built and run.

    Args:
        name: registry name (``ImageEncoderConfig.backbone``).
        build: ``(spatial_dims, in_channels, image_size) -> nn.Module`` (the MONAI net without its head).
        features: ``(net, x) -> feature map`` (B, C, *grid) for CNNs, or tokens (B, Ni, C) for the ViT.
        out_channels: C.
        head_prefixes: state-dict prefixes of the removed classification head (ignored when loading weights).
        is_vit: the trunk returns tokens on a patch grid rather than a feature map.
        patch: ViT patch size (the input side must be a multiple of it).
    """

    name: str
    build: Callable[[int, int, int], nn.Module]
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    out_channels: int
    head_prefixes: tuple[str, ...] = ()
    is_vit: bool = False
    patch: int = 1


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry (name must be new)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """The spec named ``name``; ``KeyError`` lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown image backbone {name!r}; known: {list_backbones()}") from None


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------------------------------- DenseNet
def _densenet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # MONAI's DenseNet.features ends with the last norm layer; the classifier applies ReLU before pooling.
    return torch.relu(net.features(x))  # (B, C, *grid)


def _drop_densenet_head(net: nn.Module) -> nn.Module:
    net.class_layers = nn.Identity()
    return net


register_backbone(BackboneSpec(
    name="densenet121",
    build=lambda dims, cin, size: _drop_densenet_head(nets.DenseNet121(spatial_dims=dims, in_channels=cin,
                                                                       out_channels=1)),
    features=_densenet_features, out_channels=1024, head_prefixes=("class_layers.",),
))


def _register_densenet(name: str, *, init_features: int, growth_rate: int, block_config: tuple[int, ...],
                       bn_size: int) -> None:
    """Register a MONAI ``DenseNet`` of this shape; its feature width follows from it (each block adds
    ``layers × growth_rate`` channels, each transition halves them)."""
    channels = init_features
    for i, layers in enumerate(block_config):
        channels += layers * growth_rate
        if i < len(block_config) - 1:
            channels //= 2
    register_backbone(BackboneSpec(
        name=name,
        build=lambda dims, cin, size: _drop_densenet_head(nets.DenseNet(
            spatial_dims=dims, in_channels=cin, out_channels=1, init_features=init_features, growth_rate=growth_rate,
            block_config=block_config, bn_size=bn_size)),
        features=_densenet_features, out_channels=channels, head_prefixes=("class_layers.",),
    ))


# Three dense blocks (stride 16): an 8×8 token grid at 128 px, light enough to train on 2 CPU cores.
_register_densenet("densenet_small", init_features=32, growth_rate=16, block_config=(4, 8, 8), bn_size=4)
# About 5× cheaper than densenet_small (0.14 vs 0.64 GFLOP forward+backward per 128 px image): the CPU demo's backbone.
_register_densenet("densenet_tiny", init_features=16, growth_rate=12, block_config=(3, 6, 6), bn_size=2)
# densenet_tiny without its third dense block (stride 8): a 16×16 token grid at 128 px whose tokens see less of the
# image (theoretical receptive field 135 px against 335 px), at a little less cost (0.12 against 0.14 GFLOP
# forward+backward per 128 px image).
_register_densenet("densenet_tiny_s8", init_features=16, growth_rate=12, block_config=(3, 6), bn_size=2)


# ----------------------------------------------------------------------------------------------------- ResNet
def _resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.act(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return x  # (B, C, *grid), already after the last block's ReLU


def _resnet(depth: int) -> Callable[[int, int, int], nn.Module]:
    def build(dims: int, cin: int, size: int) -> nn.Module:
        net = getattr(nets, f"resnet{depth}")(spatial_dims=dims, n_input_channels=cin, num_classes=1)
        net.fc = None  # the pooled classification head is not used (MONAI skips a None fc)
        net.avgpool = nn.Identity()
        return net

    return build


register_backbone(BackboneSpec(name="resnet18", build=_resnet(18), features=_resnet_features, out_channels=512,
                               head_prefixes=("fc.",)))
register_backbone(BackboneSpec(name="resnet50", build=_resnet(50), features=_resnet_features, out_channels=2048,
                               head_prefixes=("fc.",)))


# -------------------------------------------------------------------------------------------------------- ViT
_VIT_PATCH = 16


def _vit_build(dims: int, cin: int, size: int) -> nn.Module:
    if size % _VIT_PATCH:
        raise ValueError(f"the ViT needs an image size that is a multiple of {_VIT_PATCH}, got {size}")
    return nets.ViT(in_channels=cin, img_size=(size,) * dims, patch_size=(_VIT_PATCH,) * dims, spatial_dims=dims,
                    classification=False, hidden_size=384, mlp_dim=1536, num_layers=6, num_heads=6)


def _vit_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens, _ = net(x)  # (B, Ni, C), row-major over the patch grid (no class token without classification)
    return tokens


register_backbone(BackboneSpec(name="vit", build=_vit_build, features=_vit_features, out_channels=384, is_vit=True,
                               patch=_VIT_PATCH))
