"""OTDD's ``inner_debiased`` option (microsoft/otdd ``inner_ot_debiased``, used by ORCA).

The label-to-label table must be what microsoft/otdd's ``pwdist_exact`` computes: one
geomloss ``SamplesLoss("sinkhorn", p=2, blur=entreg**0.5, debias=...)`` per class pair on
the squared Euclidean cost. geomloss is the kit's own dependency (its Sinkhorn loop), so
the reference is computed here, pair by pair.
"""

from __future__ import annotations

import pathlib
import sys

import geomloss
import pytest
import torch

from crossmodal.distances import OTDDSource, otdd
from crossmodal.distances._otdd import _side
from crossmodal.errors import InvalidInputError

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from otdd_cases import make_case  # noqa: E402


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j|^2 (not halved): microsoft/otdd's inner cost for p = 2."""
    return ((x.unsqueeze(-2) - y.unsqueeze(-3)) ** 2).sum(-1)


def _reference_table(x1, y1, x2, y2, debias: bool, entreg: float = 0.1) -> torch.Tensor:
    loss = geomloss.SamplesLoss(loss="sinkhorn", p=2, debias=debias, blur=entreg ** 0.5,
                                cost=squared_distances, backend="tensorized")
    c1, c2 = torch.unique(y1), torch.unique(y2)
    return torch.tensor([[float(loss(x1[y1 == a], x2[y2 == b])) for b in c2] for a in c1])


@pytest.mark.parametrize("debias", [False, True])
def test_label_table_matches_pairwise_geomloss(debias):
    x1, y1, x2, y2 = make_case("imbalanced_4v2_d8")
    src = OTDDSource(x1, y1, inner="exact", inner_debiased=debias)
    table = src._table(_side(x2, y2, "2", "error"), 0.5, symmetric=False)
    ref = _reference_table(x1, y1, x2, y2, debias)
    assert table.shape == ref.shape == (4, 2)
    torch.testing.assert_close(table, ref, rtol=1e-4, atol=1e-4)


def test_debiasing_changes_the_label_distances_and_the_distance():
    x1, y1, x2, y2 = make_case("balanced_3v3_d4")
    src_raw = OTDDSource(x1, y1)
    src_deb = OTDDSource(x1, y1, inner_debiased=True)
    side = _side(x2, y2, "2", "error")
    raw, deb = src_raw._table(side, 0.5, False), src_deb._table(side, 0.5, False)
    # the divergence removes each cloud's positive entropic self-cost: strictly smaller
    assert bool((deb < raw).all())
    d_raw = float(otdd(x1, y1, x2, y2))
    d_deb = float(otdd(x1, y1, x2, y2, inner_debiased=True))
    assert d_raw != pytest.approx(d_deb, rel=1e-4)
    # the cached-source path and the direct call agree with the option on
    assert float(src_deb.distance(x2, y2)) == pytest.approx(d_deb, rel=1e-5)


def test_debiased_inner_distance_of_a_class_with_itself_is_about_zero():
    x1, y1, _, _ = make_case("balanced_3v3_d4")
    src = OTDDSource(x1, y1, inner_debiased=True)
    table = src._table(_side(x1.clone(), y1.clone(), "2", "error"), 0.5, False)
    assert float(table.diagonal().abs().max()) < 1e-3
    raw = OTDDSource(x1, y1)._table(_side(x1.clone(), y1.clone(), "2", "error"), 0.5, False)
    assert float(raw.diagonal().min()) > 0.05  # the raw entropic W(y, y) is not zero


def test_default_is_microsoft_otdd_default():
    x1, y1, x2, y2 = make_case("balanced_3v3_d4")
    assert float(otdd(x1, y1, x2, y2)) == float(otdd(x1, y1, x2, y2, inner_debiased=False))
    with pytest.raises(InvalidInputError, match="inner_debiased"):
        OTDDSource(x1, y1, inner_debiased="yes")
