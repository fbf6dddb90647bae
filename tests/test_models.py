"""Model building: timm names, 4th-channel init, local weights, the ArcFace head, the forward contract."""
import math

import pytest
import timm
import torch

from hpa.config import ModelConfig
from hpa.errors import HPAError
from hpa.models import build_model
from hpa.models.classifier import first_conv
from hpa.models.heads import ArcMarginHead


def test_forward_contract_uint8():
    torch.manual_seed(0)
    m = build_model(ModelConfig(name="test_resnet")).eval()
    out = m(torch.randint(0, 256, (2, 4, 32, 32), dtype=torch.uint8))
    assert out.shape == (2, 28) and out.dtype == torch.float32


def test_red_fourth_channel_init():
    m = build_model(ModelConfig(name="resnet18", fourth_channel_init="red"))
    w = first_conv(m.backbone).weight
    assert w.shape[1] == 4 and torch.equal(w[:, 3], w[:, 0])
    with pytest.raises(HPAError, match="model.fourth_channel_init: 'blue' not one of timm, red"):
        build_model(ModelConfig(name="test_resnet", fourth_channel_init="blue"))


def test_local_weights_file(tmp_path):
    torch.manual_seed(1)
    src = timm.create_model("test_resnet", pretrained=False)       # 3-channel, 1000 classes
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    m = build_model(ModelConfig(name="test_resnet", weights=str(path), fourth_channel_init="red"))
    conv = first_conv(m.backbone).weight
    ref = first_conv(src).weight
    # timm adapts 3 -> 4 channels by repeating RGB and scaling by 3/4; red init then copies red
    assert torch.allclose(conv[:, :3], ref * 0.75) and torch.equal(conv[:, 3], conv[:, 0])
    last = "layer4.0.downsample.1.weight"
    assert torch.equal(m.backbone.state_dict()[last], src.state_dict()[last])
    with pytest.raises(HPAError, match="model.weights: file not found: nope.pth"):
        build_model(ModelConfig(name="test_resnet", weights="nope.pth"))


def test_unknown_model_and_mobilenet_head_dim():
    with pytest.raises(HPAError, match="model.name: unknown timm model 'resnet999'"):
        build_model(ModelConfig(name="resnet999"))
    m = build_model(ModelConfig(name="mobilenetv3_small_050")).eval()
    assert m(torch.zeros(1, 4, 32, 32)).shape == (1, 28)


def test_arcface_head_margin_only_on_positives_in_training():
    head = ArcMarginHead(2, 2, s=30.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    feats = torch.tensor([[1.0, 0.0]])                  # cos = [1, 0]
    train = head(feats, torch.tensor([[0.0, 1.0]]))
    assert train[0, 0].item() == pytest.approx(30.0, abs=1e-3)             # negative: no margin
    assert train[0, 1].item() == pytest.approx(30 * math.cos(math.pi / 2 + 0.5), abs=1e-4)
    assert torch.allclose(head(feats), torch.tensor([[30.0, 0.0]]), atol=1e-3)
    model = build_model(ModelConfig(name="test_resnet", head="arcface"))
    model.eval()
    assert model(torch.zeros(1, 4, 32, 32)).abs().max() <= 30.0 + 1e-4


def test_grad_checkpointing_gives_the_same_gradients():
    x = torch.randint(0, 256, (4, 4, 32, 32), dtype=torch.uint8)
    y = (torch.rand(4, 28, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="test_resnet", grad_checkpointing=ckpt)).train()
        assert model.backbone.grad_checkpointing is ckpt
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6)
    with pytest.raises(HPAError, match="model.grad_checkpointing: timm model 'InceptionV3' does not support"):
        build_model(ModelConfig(name="inception_v3", grad_checkpointing=True))
