"""Proxy and target features (crossmodal.features): padding stays out of the attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossmodal.bodies import load_body
from crossmodal.errors import InvalidInputError
from crossmodal.features import (
    eval_mode,
    masked_mean,
    proxy_body_features,
    source_body_features,
)
from crossmodal.proxies import load_proxy, source_tokens


@pytest.fixture(scope="module")
def body_and_proxy():
    body = load_body("minilm")
    proxy = load_proxy("pydoc_topics", max_samples=12, seed=0)
    # 64 tokens (the kit's default; the smoke proxy's own budget is 32): most of these
    # sentences are then padded, which is what the masking tests need
    proxy.max_tokens = 64
    return body, proxy


def test_a_sentences_features_do_not_depend_on_the_other_sentences_of_its_batch(
        body_and_proxy):
    body, proxy = body_and_proxy
    tokens, mask = source_tokens(body, proxy)
    lengths = mask.sum(1)
    assert (lengths < tokens.shape[1]).sum() >= 10  # most sentences are padded in the bank
    batched = proxy_body_features(body, proxy)
    with eval_mode(body), torch.no_grad():
        for i in range(len(tokens)):
            n = int(lengths[i])
            alone = body(tokens[i : i + 1, :n]).mean(1)[0]  # no padding at all
            torch.testing.assert_close(batched[i], alone, atol=2e-5, rtol=1e-4)
        # in a batch of 2 with a different partner, and with another batch size: the same
        pair = source_body_features(body, tokens[[0, 5]], mask[[0, 5]], batch_size=2)
        torch.testing.assert_close(pair[0], batched[0], atol=2e-5, rtol=1e-4)
        # without the attention mask the padding is attended and the features move
        unmasked = masked_mean(body(tokens[:4]), mask[:4])
        assert (unmasked - batched[:4]).norm(dim=1).min() > 0.1 * batched[:4].norm(dim=1).min()


def test_functional_parameters_and_gradients(body_and_proxy):
    body, proxy = body_and_proxy
    tokens, mask = source_tokens(body, proxy)
    params = dict(body.named_parameters())
    with eval_mode(body):
        own = source_body_features(body, tokens[:3], mask[:3])
        via = source_body_features(body, tokens[:3], mask[:3], params=params, grad=True)
    torch.testing.assert_close(own, via.detach())
    assert via.requires_grad and not own.requires_grad


def test_eval_mode_restores_each_submodules_mode_and_masked_mean_checks_shapes():
    net = nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2))
    net.train()
    net[1].eval()
    with eval_mode(net):
        assert not net.training and not net[0].training
    assert net.training and net[0].training and not net[1].training
    x = torch.arange(12.0).reshape(1, 3, 4)
    torch.testing.assert_close(masked_mean(x, torch.tensor([[1, 1, 0]])), x[:, :2].mean(1))
    with pytest.raises(InvalidInputError, match="mask"):
        masked_mean(x, torch.tensor([[1, 0]]))  # padding that the body's length change lost


def test_a_grid_body_refuses_a_mask_it_cannot_apply():
    from crossmodal.bodies import Body

    grid = Body("grid", nn.Identity(), 4, 4, kind="swin")
    with pytest.raises(InvalidInputError, match="cannot mask"):
        grid(torch.zeros(1, 4, 4), attention_mask=torch.tensor([[1, 1, 1, 0]]))


def test_the_smoke_proxy_cuts_sentences_at_its_token_budget():
    from crossmodal.data.proxies import PYDOC_MAX_TOKENS

    body = load_body("minilm-l3")
    proxy = load_proxy("pydoc_topics", max_samples=40, seed=0)
    assert proxy.max_tokens == PYDOC_MAX_TOKENS == 32
    tokens, mask = source_tokens(body, proxy)
    assert tokens.shape[1] == 32 and int(mask.sum(1).max()) == 32  # the long ones are cut
    long, _ = source_tokens(body, proxy, max_length=64)  # an explicit budget still wins
    assert long.shape[1] == 64
    # the same tokens up to the cut (a cut sentence ends in [SEP] at position 31)
    keep = mask.bool()[:, :31]
    torch.testing.assert_close(long[:, :31][keep], tokens[:, :31][keep])
