"""The paper path on publisher-format fixtures (issue 13).

* fast: ``crossmodal data fixtures`` writes every paper task and proxy in the real layout, the
  kit's loaders read all 18 tasks through the real code path with the registry's shapes, and
  ``crossmodal data verify`` says "fixture" (never "ok");
* slow: every paper task x method in the ``paper`` profile, on the fixtures, with random
  bodies of the real architectures, 2 micro-batches of 2 samples per stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossmodal.data import fixtures
from crossmodal.data.cli import main as data_main
from crossmodal.tasks import get_task, list_tasks

PAPER_TASKS = [t.key for t in list_tasks() if t.benchmark in ("NAS-Bench-360", "PDEBench")]


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixtures")
    assert data_main(["fixtures", "--dest", str(root)]) == 0
    return root


def test_every_paper_task_and_proxy_has_a_fixture():
    assert len(PAPER_TASKS) == 18
    assert set(PAPER_TASKS) == set(fixtures.PAPER_TASKS)
    assert set(fixtures.PROXIES) == {"CIFAR10", "CoNLL2003", "TinyImageNet", "Caltech101",
                                     "PascalVOC2012"}


@pytest.mark.parametrize("key", PAPER_TASKS)
def test_loader_reads_fixture_with_registry_shapes(fixture_root, key):
    spec = get_task(key)
    from crossmodal.data.presence import is_present

    assert is_present(key, fixture_root)
    splits = spec.load(fixture_root)  # validates shapes, dtypes, label ranges
    for name in ("train", "test"):
        x, y = splits[name]
        assert x.dtype == np.float32 and len(x) >= 2, (name, x.dtype, len(x))
        assert tuple(x.shape[1:]) == tuple(spec.input_shape)
        if spec.output == "classification":
            assert y.dtype == np.int64
        else:
            assert tuple(y.shape[1:]) == tuple(spec.output_shape)
    assert len(splits["train"][0]) >= 4  # two micro-batches of 2


def test_proxies_read_from_fixture(fixture_root):
    from crossmodal.data.proxies import CONLL_CLASSES, load_proxy_arrays

    cifar = load_proxy_arrays("cifar10", root=fixture_root)
    assert cifar.images.shape[1:] == (3, 32, 32) and cifar.images.dtype == np.float32
    assert 0 <= cifar.images.min() and cifar.images.max() <= 1
    text = load_proxy_arrays("conll2003", root=fixture_root)
    assert len(text) == 40 and set(text.labels) == set(range(len(CONLL_CLASSES)))


def test_layouts_of_image_proxies(fixture_root):
    from PIL import Image

    voc = fixture_root / "proxies/pascal_voc2012/VOCdevkit/VOC2012"
    ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    mask = Image.open(voc / "SegmentationClass" / f"{ids[0]}.png")
    assert mask.mode == "P" and set(np.unique(np.asarray(mask))) <= {0, *range(1, 21), 255}
    tiny = fixture_root / "proxies/tiny_imagenet/tiny-imagenet-200"
    wnid = (tiny / "wnids.txt").read_text().split()[0]
    img = Image.open(next((tiny / "train" / wnid / "images").iterdir()))
    assert img.size == (64, 64) and img.mode == "RGB"
    assert (fixture_root / "proxies/caltech101/caltech-101/101_ObjectCategories.tar.gz").exists()


def test_verify_says_fixture_and_download_refuses(fixture_root, capsys):
    assert data_main(["verify", "--data-root", str(fixture_root)]) == 0
    out = capsys.readouterr().out
    assert "FIXTURE root" in out and "ECG: fixture" in out and " ok " not in out
    assert not (fixture_root / ".checksums.json").exists()  # nothing recorded as real
    assert data_main(["download", "ECG", "--dest", str(fixture_root)]) == 2
    assert "fixture root" in capsys.readouterr().err


def test_fixtures_refuse_a_root_with_other_files(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"x")
    assert data_main(["fixtures", "--dest", str(tmp_path), "ECG"]) == 2
    assert not (tmp_path / fixtures.MARKER).exists()


def test_prepare_raw_formats_without_the_marker(tmp_path):
    """FSD50K/PSICOV/Cosmic: the raw->arrays step depends on the files, not on the marker."""
    from crossmodal.data import nb360_prepare

    fixtures.write_fixtures(tmp_path, ["PSICOV", "Cosmic"])
    (tmp_path / fixtures.MARKER).unlink()
    for key, shape in (("PSICOV", (57, 128, 128)), ("Cosmic", (1, 128, 128))):
        folder = nb360_prepare.prepare(key, tmp_path)
        assert np.load(folder / "train_x.npy").shape[1:] == shape
        assert np.load(folder / "test_y.npy").shape[1:] == (1, 128, 128)
