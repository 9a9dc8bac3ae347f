"""weights="imagenet": the real download code, fed from a local file:// origin."""

import hashlib
import os

import numpy as np
import pytest

from conftest import outputs
from helpers import random_reference, relative_error
from keras_mbv3.applications import LRASPPMobileNetV3Small, MobileNetV3Small
from keras_mbv3.applications import weights as weight_files


def md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


@pytest.fixture
def origin(tmp_path, monkeypatch):
    """A local origin serving official-layout files, and an empty Keras cache."""
    served = tmp_path / "origin"
    served.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(weight_files, "BASE_WEIGHT_PATH", served.as_uri() + "/")
    return served


def test_fetch_right_hash_caches_file(origin, tmp_path):
    (origin / "w.h5").write_bytes(b"weights")
    path = weight_files.fetch("w.h5", md5(origin / "w.h5"))
    assert path == os.path.join(str(tmp_path / "keras_home"), "models", "w.h5")
    assert open(path, "rb").read() == b"weights"


def test_fetch_wrong_hash_is_error_and_not_kept(origin, tmp_path):
    (origin / "w.h5").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="w.h5.*md5"):
        weight_files.fetch("w.h5", "0" * 32)
    assert not os.path.exists(os.path.join(str(tmp_path / "keras_home"), "models", "w.h5"))


def test_failed_download_names_the_url_and_the_way_out(origin):
    with pytest.raises(ConnectionError, match=f"{origin.as_uri()}/absent.h5.*pass its path"):
        weight_files.fetch("absent.h5", "0" * 32)


def test_cli_without_network_is_one_line_and_writes_nothing(origin, tmp_path, capsys):
    """Issue 15: `--weights imagenet` offline printed a 98-line traceback and left settings.json behind."""
    from keras_mbv3.recipes.cli import main

    code = main(["train", "--weights", "imagenet", "--epochs", "1", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert "mbv3: error: Could not download the weights file " + origin.as_uri() in error and "--weights" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("include_top", [True, False])
def test_imagenet_weights_through_download(origin, monkeypatch, include_top, rng):
    reference = random_reference("MobileNetV3Small", input_shape=(224, 224, 3), include_top=include_top)
    file_name, _ = weight_files.imagenet_file("small", False, 1.0, include_top)
    reference.save_weights(str(origin / file_name))
    hashes = dict(weight_files.WEIGHTS_HASHES)
    with_top, without_top = hashes["small_224_1.0_float"]
    local = md5(origin / file_name)
    hashes["small_224_1.0_float"] = (local, without_top) if include_top else (with_top, local)
    monkeypatch.setattr(weight_files, "WEIGHTS_HASHES", hashes)

    model = MobileNetV3Small(weights="imagenet", input_shape=(224, 224, 3), include_top=include_top)
    x = rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    assert relative_error(outputs(model, x), outputs(reference, x)) < 1e-5

    if not include_top:
        segmenter = LRASPPMobileNetV3Small(5, input_shape=(224, 224, 3), backbone_weights="imagenet")
        np.testing.assert_array_equal(
            segmenter.get_layer("expanded_conv_3").get_weights()[0], model.get_layer("expanded_conv_3").get_weights()[0]
        )
