import math

import pytest
import torch

from drawzoo.attention import (
    Glimpse, attention_params, covering_glimpse_bias, filterbank, filterbanks, read, write,
)


def test_filterbank_is_identity_with_unit_stride_and_tiny_variance():
    for size in (5, 28):
        center = torch.tensor([(size + 1) / 2])
        F = filterbank(center, torch.tensor([1.0]), torch.tensor([1e-3]), N=size, size=size)
        assert F.shape == (1, size, size)
        torch.testing.assert_close(F[0], torch.eye(size), atol=1e-6, rtol=0)


def test_filterbank_centres_follow_the_paper():
    # mu_i = g + (i - N/2 - 0.5) delta: for N = 4, g = 10, delta = 3 -> 5.5, 8.5, 11.5, 14.5
    F = filterbank(torch.tensor([10.0]), torch.tensor([3.0]), torch.tensor([0.5]), N=4, size=20)
    a = torch.arange(1, 21, dtype=torch.float32)
    means = (F[0] * a).sum(-1)
    torch.testing.assert_close(means, torch.tensor([5.5, 8.5, 11.5, 14.5]), atol=1e-4, rtol=0)
    torch.testing.assert_close(F.sum(-1), torch.ones(1, 4))


def _random_glimpse(B, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Glimpse(
        g_x=torch.rand(B, generator=g) * W + 0.5, g_y=torch.rand(B, generator=g) * H + 0.5,
        delta=torch.rand(B, generator=g) * 3 + 0.5, sigma2=torch.rand(B, generator=g) * 2 + 0.2,
        gamma=torch.rand(B, generator=g) + 0.5,
    )


@pytest.mark.parametrize("C,H,W,N", [(1, 28, 28, 5), (3, 12, 20, 3)])
def test_read_and_write_are_adjoint(C, H, W, N):
    B = 4
    glimpse = _random_glimpse(B, H, W)
    F_x, F_y = filterbanks(glimpse, N, H, W)
    assert F_x.shape == (B, N, W) and F_y.shape == (B, N, H)
    x, w = torch.randn(B, C, H, W, dtype=torch.float64), torch.randn(B, C, N, N, dtype=torch.float64)
    F_x, F_y, one = F_x.double(), F_y.double(), torch.ones(B, dtype=torch.float64)
    r, u = read(x, F_x, F_y, one), write(w, F_x, F_y, one)
    assert r.shape == (B, C, N, N) and u.shape == (B, C, H, W)
    torch.testing.assert_close((r * w).sum((1, 2, 3)), (x * u).sum((1, 2, 3)))


def test_read_and_write_apply_gamma():
    glimpse = _random_glimpse(2, 10, 10)
    F_x, F_y = filterbanks(glimpse, 3, 10, 10)
    x, w = torch.rand(2, 1, 10, 10), torch.rand(2, 1, 3, 3)
    one, gamma = torch.ones(2), torch.tensor([2.0, 0.5])
    torch.testing.assert_close(read(x, F_x, F_y, gamma), gamma[:, None, None, None] * read(x, F_x, F_y, one))
    torch.testing.assert_close(write(w, F_x, F_y, gamma), write(w, F_x, F_y, one) / gamma[:, None, None, None])


def test_batched_equals_per_example():
    B, C, H, W, N = 5, 3, 9, 14, 4
    glimpse = _random_glimpse(B, H, W, seed=1)
    x, w = torch.rand(B, C, H, W), torch.rand(B, C, N, N)
    F_x, F_y = filterbanks(glimpse, N, H, W)
    r, u = read(x, F_x, F_y, glimpse.gamma), write(w, F_x, F_y, glimpse.gamma)
    for b in range(B):
        gb = Glimpse(*(f[b:b + 1] for f in glimpse))
        fx, fy = filterbanks(gb, N, H, W)
        torch.testing.assert_close(read(x[b:b + 1], fx, fy, gb.gamma), r[b:b + 1])
        torch.testing.assert_close(write(w[b:b + 1], fx, fy, gb.gamma), u[b:b + 1])


def test_attention_params_use_the_papers_scalings_per_axis():
    H, W, N = 28, 40, 5
    raw = torch.tensor([[0.5, -0.5, math.log(2.0), math.log(0.5), math.log(3.0)]])
    g = attention_params(raw, N, H, W)
    torch.testing.assert_close(g.g_x, torch.tensor([(W + 1) / 2 * 1.5]))  # the width for x
    torch.testing.assert_close(g.g_y, torch.tensor([(H + 1) / 2 * 0.5]))  # the height for y
    torch.testing.assert_close(g.delta, torch.tensor([(max(H, W) - 1) / (N - 1) * 0.5]), rtol=1e-5, atol=0)
    torch.testing.assert_close(g.sigma2, torch.tensor([2.0]), rtol=1e-5, atol=0)
    torch.testing.assert_close(g.gamma, torch.tensor([3.0]), rtol=1e-5, atol=0)
    # g~ = 0 is the image centre, g~ = -1 / +1 are just outside the first / last pixel
    centre = attention_params(torch.zeros(1, 5), N, H, W)
    assert centre.g_x.item() == (W + 1) / 2 and centre.g_y.item() == (H + 1) / 2


def test_covering_bias_tiles_the_image():
    for N, H, W in [(2, 28, 28), (5, 28, 28), (3, 28, 40)]:
        g = attention_params(covering_glimpse_bias(N, H, W)[None], N, H, W)
        assert g.delta.item() == pytest.approx(max(H, W) / N, rel=1e-5)
        assert g.sigma2.item() == pytest.approx((max(H, W) / N / 2) ** 2, rel=1e-5)
        assert g.gamma.item() == pytest.approx(1.0)
        w = attention_params(covering_glimpse_bias(N, H, W, write=True)[None], N, H, W)
        assert w.gamma.item() == pytest.approx(1 / (2 * math.pi * g.sigma2.item()), rel=1e-5)


def test_a_unit_write_adds_about_one_logit_at_a_filter_centre():
    from drawzoo.attention import GaussianWrite

    head = GaussianWrite(hidden_dim=4, image_shape=(1, 28, 28), N=5)
    with torch.no_grad():
        head.glimpse.weight.zero_()
        head.patch.weight.zero_()
        head.patch.bias.zero_()
        head.patch.bias[12] = 1.0  # the centre filter of the 5 x 5 grid
    update, _ = head(torch.zeros(1, 4))
    assert update.max().item() == pytest.approx(1.0, rel=0.1)
    assert update.sum().item() == pytest.approx(2 * math.pi * (28 / 5 / 2) ** 2, rel=0.05)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_decoder_states_give_finite_filters_and_gradients(scale):
    torch.manual_seed(0)
    H, W, N = 28, 28, 5
    raw = (torch.randn(8, 5) * scale).requires_grad_()
    g = attention_params(raw, N, H, W)
    assert all(torch.isfinite(f).all() for f in g)
    F_x, F_y = filterbanks(g, N, H, W)
    x = torch.rand(8, 1, H, W)
    loss = read(x, F_x, F_y, g.gamma).sum() + write(torch.rand(8, 1, N, N), F_x, F_y, g.gamma).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(raw.grad).all()


@pytest.mark.parametrize("sigma2,delta", [(1e-30, 1.0), (1e30, 1.0), (1.0, 1e-30), (1.0, 1e30), (1e-30, 1e30)])
def test_filterbank_gradients_are_finite_at_extreme_parameters(sigma2, delta):
    center = torch.tensor([14.0, -1e6, 1e6], requires_grad=True)
    d = torch.full((3,), delta, requires_grad=True)
    s = torch.full((3,), sigma2, requires_grad=True)
    F = filterbank(center, d, s, N=5, size=28)
    F.pow(2).sum().backward()
    assert torch.isfinite(F).all()
    for p in (center, d, s):
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("lead", [(5,), (3, 5)])
def test_compiled_read_and_write_are_the_eager_ones(lead):
    """Compiled, read and write are sums of products that inductor fuses (eagerly: batched matrix
    products): the same glimpses, canvas updates and gradients, in float64 to 1e-12, for colour,
    non-square images and extra batch dimensions."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*lead, *shape, generator=g, dtype=torch.float64, requires_grad=True)

    x, w, F_x, F_y, gamma = rand(3, 7, 9), rand(3, 4, 4), rand(4, 9), rand(4, 7), rand()
    for fn, inputs in ((read, (x, F_x, F_y, gamma)), (write, (w, F_x, F_y, gamma + 0.5))):
        compiled = torch.compile(fn, backend="eager", fullgraph=True)
        out, got = fn(*inputs), compiled(*inputs)
        torch.testing.assert_close(got, out, rtol=1e-12, atol=1e-12)
        leaves = [x, w, F_x, F_y, gamma]
        expected = torch.autograd.grad(out.square().sum(), leaves, allow_unused=True)
        grads = torch.autograd.grad(got.square().sum(), leaves, allow_unused=True)
        for a, b in zip(grads, expected, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
