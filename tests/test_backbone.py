"""VGG-16 backbone: torchvision's layers and parameter names, weights from a local file, the hash
check on files named like torchvision's download, and the warning for random initialisation."""
import shutil
import warnings

import pytest
import torch
from torchvision.models import vgg16

from iaiabl_lib.model import VGG16_FILENAME, vgg16_features


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    sd = vgg16(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "my_vgg16.pth"
    torch.save(sd, path)
    return path, sd


def test_layers_match_torchvision_without_last_pool():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = vgg16_features("none")
    ref = vgg16(weights=None).features[:-1]
    assert list(f.state_dict()) == list(ref.state_dict())
    assert not isinstance(f[-1], torch.nn.MaxPool2d)
    assert f(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 14, 14)


def test_random_initialisation_warns():
    with pytest.warns(UserWarning, match="random"):
        vgg16_features("none")


def test_local_weights_file_loads_feature_weights(vgg_file):
    path, sd = vgg_file
    f = vgg16_features(str(path))
    for k, v in f.state_dict().items():
        assert torch.equal(v, sd["features." + k])


def test_file_named_like_torchvision_must_match_hash_prefix(vgg_file, tmp_path):
    path, _ = vgg_file
    fake = tmp_path / VGG16_FILENAME
    shutil.copy(path, fake)
    with pytest.raises(ValueError, match="does not match torchvision's VGG-16"):
        vgg16_features(str(fake))


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        vgg16_features(str(tmp_path / "nothere.pth"))
