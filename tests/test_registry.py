import pytest

import drawzoo
from drawzoo.models import DRAW, VAE
from tests.conftest import fake_distribution
from tests.zoo_models import tiny_models


def test_available_lists_the_zoo_sorted():
    names = drawzoo.available()
    assert names == sorted(names) and {"draw", "vae"} <= set(names)


def test_every_registered_model_is_in_the_tests_every_zoo_model_passes():
    """tests/zoo_models.py lists a tiny instance of each installed zoo model, for test_pyro_native.py,
    test_masks.py and the rest; a model registered without one would skip them unnoticed."""
    cases = {name: make() for name, make in tiny_models().items()}
    assert {m.zoo_name for m in cases.values()} == set(drawzoo.available())
    assert {m.zoo_name for m in map(lambda make: make(), tiny_models((1, 6, 7)).values())} == set(drawzoo.available())


def test_load_builds_registered_models():
    assert isinstance(drawzoo.load("draw", T=2), DRAW)
    assert isinstance(drawzoo.load("vae"), VAE)


def test_unknown_model_lists_what_is_available():
    with pytest.raises(drawzoo.UnknownModelError) as e:
        drawzoo.load("drwa")
    assert "'drwa'" in str(e.value) and "draw" in str(e.value) and "vae" in str(e.value)


def test_unknown_config_key_names_it_and_the_valid_ones():
    with pytest.raises(drawzoo.ConfigError) as e:
        drawzoo.load("draw", attension=True)
    msg = str(e.value)
    assert "'attension'" in msg
    for key in ("T", "hidden_dim", "latent_dim", "read_size", "write_size", "attention", "image_shape"):
        assert key in msg


@pytest.mark.parametrize("bad,match", [
    (dict(T=0), "'T' must be >= 1"),
    (dict(T=-3), "'T' must be >= 1"),
    (dict(T=2.5), "'T' must be an integer"),
    (dict(attention="yes"), "'attention' must be True or False"),
    (dict(image_shape=(28, 28)), "'image_shape' must have 3 values"),
    (dict(image_shape=(1, 0, 28)), "'image_shape' must be positive"),
    (dict(read_size=30), "'read_size'=30 is larger than the image"),
    (dict(write_size=9, image_shape=(1, 8, 40)), "'write_size'=9 is larger than the image"),
])
def test_bad_config_values_are_named(bad, match):
    with pytest.raises(drawzoo.ConfigError, match=match):
        drawzoo.load("draw", **bad)


def test_config_values_are_coerced_to_their_types():
    m = drawzoo.load("draw", image_shape=[3, 16, 16], T=2)
    assert m.config.image_shape == (3, 16, 16)
    # the size check only applies to attention grids
    assert drawzoo.load("draw", attention=False, image_shape=(1, 4, 4), T=1).config.write_size == 5


def test_a_third_party_entry_point_joins_the_zoo(tmp_path, monkeypatch):
    fake_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "mymodel" in drawzoo.available()
    m = drawzoo.load("mymodel", latent_dim=3)
    assert type(m).__name__ == "TinyVAE" and m.config.hidden_dim == 7 and m.config.latent_dim == 3
    assert m.generate(2).shape == (1, 2, 1, 28, 28)
    with pytest.raises(drawzoo.ConfigError, match="'T'"):
        drawzoo.load("mymodel", T=3)


def test_a_name_registered_twice_is_an_error(tmp_path, monkeypatch):
    fake_distribution(tmp_path, model_name="vae")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(drawzoo.DrawzooError, match="registered twice"):
        drawzoo.load("vae")
