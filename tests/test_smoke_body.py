"""The smoke profile's body is MiniLM's first 3 layers with their real pretrained weights."""

from __future__ import annotations

import pytest
import torch

from crossmodal.bodies import OFFLINE_BODIES, load_body
from crossmodal.errors import InvalidInputError
from crossmodal.methods import get_method
from crossmodal.profiles import default_body
from crossmodal.tasks import get_task


def test_smoke_body_is_the_first_three_pretrained_minilm_layers():
    full, l3 = load_body("minilm"), load_body("minilm-l3")
    assert (l3.name, l3.num_layers, l3.pretrained) == ("minilm-l3", 3, True)
    assert len(l3.blocks.layer) == 3 and len(full.blocks.layer) == 6
    first3 = {k: v for k, v in full.state_dict().items()
              if not k.startswith("blocks.layer.") or int(k.split(".")[2]) < 3}
    assert first3.keys() == l3.state_dict().keys()
    for k, v in l3.state_dict().items():
        assert torch.equal(v, first3[k]), k  # the pretrained weights, not a re-initialisation
    x = torch.randn(2, 4, 384)
    with torch.no_grad():
        full.eval()
        l3.eval()
        assert not torch.allclose(full(x), l3(x))  # 3 layers, not 6


def test_smoke_random_twin_has_the_same_architecture_and_random_weights():
    l3, rnd = load_body("minilm-l3"), load_body("minilm-l3-random")
    assert (rnd.name, rnd.num_layers, rnd.pretrained) == ("minilm-l3-random", 3, False)
    assert l3.state_dict().keys() == rnd.state_dict().keys()
    w = "blocks.layer.0.attention.self.query.weight"
    assert not torch.equal(l3.state_dict()[w], rnd.state_dict()[w])
    # scratch runs the profile body's random twin
    assert get_method("scratch").body_name("minilm-l3") == "minilm-l3-random"
    assert {"minilm-l3", "minilm-l3-random"} <= set(OFFLINE_BODIES)


@pytest.mark.parametrize("task", ["smoke_digits", "smoke_gunpoint", "smoke_advection"])
def test_smoke_profile_uses_the_three_layer_body(task):
    assert default_body(get_task(task), "smoke") == "minilm-l3"
    assert default_body(get_task(task), "lab") == "minilm"


def test_more_layers_than_the_body_has_is_an_error():
    with pytest.raises(InvalidInputError, match="minilm-l3 has 3 layers"):
        load_body("minilm-l3", num_layers=4)
    assert load_body("minilm-l3", num_layers=1).num_layers == 1
