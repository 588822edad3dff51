"""Shared fixtures: pinned threads and seeds so every test is deterministic on 2 cores."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def _small_splits(key: str, n_train: int = 32, n_test: int = 16, *, pick: str = "seeded"):
    """At most ``n_train``/``n_test`` samples of a smoke task's splits.

    ``pick="seeded"``: the runner's seeded subset (:func:`crossmodal.runner.subsample`, seed
    0, sorted indices: what a smoke run with those sizes trains on); ``"first"``: the first
    samples of each split, in stored order.
    """
    from crossmodal.runner import subsample
    from crossmodal.tasks import get_task

    splits = get_task(key).load("unused")
    if pick == "seeded":
        return subsample(splits, n_train, n_test, seed=0)
    if pick != "first":
        raise ValueError(f"pick must be 'seeded' or 'first', got {pick!r}")
    return {"train": tuple(a[:n_train] for a in splits["train"]),
            "test": tuple(a[:n_test] for a in splits["test"])}


@pytest.fixture
def small_splits():
    """``small_splits(key, n_train=32, n_test=16, pick="seeded")``: tiny in-memory splits of a
    smoke task (the one helper of every test file that trains on a few samples)."""
    return _small_splits
