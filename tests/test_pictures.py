import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import drawzoo
from drawzoo.attention import Glimpse
from drawzoo.figures.pictures import animate, attention_boxes, save_grid

RED = (255, 0, 0)


def read_frames(path):
    """Every frame of a GIF as an RGB array [H, W, 3], and the frame durations in ms."""
    with Image.open(path) as gif:
        frames = [(np.asarray(f.convert("RGB")), f.info["duration"]) for f in ImageSequence.Iterator(gif)]
    return [a for a, _ in frames], [d for _, d in frames]


def is_red(a):
    return (a == RED).all(-1)


def glimpse(**fields):
    """A write Glimpse from [T, n] lists; gamma is irrelevant to the pictures."""
    fields = {k: torch.tensor(v, dtype=torch.float32) for k, v in fields.items()}
    return Glimpse(**fields, gamma=torch.ones_like(fields["g_x"]))


def grey_canvases(T=3, n=2):
    """[T+1, n, 1, 16, 16]: at every step each image holds all 256 grey levels, shuffled anew
    (a full palette, which must still make room for red)."""
    g = torch.Generator().manual_seed(0)
    levels = torch.arange(256) / 255
    images = [levels[torch.randperm(256, generator=g)] for _ in range((T + 1) * n)]
    return torch.stack(images).view(T + 1, n, 1, 16, 16)


# Two 16 x 16 images in one row, scale 3: make_grid puts image k at x = 2 + 18 k, y = 2,
# so in the frame (x 3 times) image 0's cell spans x 6..53, y 6..53 and image 1's x 60..107.
# Step 1's windows (N = 3, window from g - delta to g + delta, 1-based):
#   image 0: g_x = 9, g_y = 7, delta = 2 -> x 7..11, y 5..9 (1-based) = x 6..10, y 4..8 (0-based);
#            an image pixel a is frame pixels 3a..3a+2, centre 3a + 1, plus the cell origin 6:
#            x 25..37, y 19..31
#   image 1: g_x = 4, g_y = 12, delta = 1 -> x 2..4, y 10..12 (0-based) -> x 67..73, y 37..43
STEP1 = dict(g_x=[9.0, 4.0], g_y=[7.0, 12.0], delta=[2.0, 1.0])
FAR = dict(g_x=[-50.0, -50.0], g_y=[-50.0, -50.0], delta=[1.0, 1.0])  # nothing on screen


def writes_with(step1, sigma2=(0.25, 0.25)):
    """Writes for T = 3 steps: `step1` at step index 1 (shown on frame 2), far away otherwise."""
    steps = [FAR, step1, FAR]
    return glimpse(**{k: [s[k] for s in steps] for k in ("g_x", "g_y", "delta")},
                   sigma2=[list(sigma2)] * 3)


def test_attention_boxes_span_the_filter_centres():
    # N = 3, delta = 2: x centres 6.5, 8.5, 10.5 (1-based) = 5.5..9.5 (0-based); y 2..6 = 1..5
    boxes = attention_boxes(glimpse(g_x=[[8.5]], g_y=[[4.0]], delta=[[2.0]], sigma2=[[1.0]]), N=3)
    assert boxes.shape == (1, 1, 4)
    torch.testing.assert_close(boxes, torch.tensor([[[5.5, 1.0, 9.5, 5.0]]]))
    # a single filter is a point at its centre
    one = attention_boxes(glimpse(g_x=[[8.5]], g_y=[[4.0]], delta=[[2.0]], sigma2=[[1.0]]), N=1)
    torch.testing.assert_close(one, torch.tensor([[[7.5, 3.0, 7.5, 3.0]]]))


def test_save_grid_writes_grey_and_colour_pngs(tmp_path):
    grey = torch.rand(5, 1, 10, 12)
    save_grid(grey, tmp_path / "grey.png")  # 3 per row: 2 rows
    with Image.open(tmp_path / "grey.png") as im:
        assert im.size == (3 * (12 + 2) + 2, 2 * (10 + 2) + 2)
        a = np.asarray(im.convert("RGB"))
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()

    save_grid(torch.rand(4, 3, 8, 8), tmp_path / "colour.png", nrow=4, padding=1)
    with Image.open(tmp_path / "colour.png") as im:
        assert im.mode == "RGB" and im.size == (4 * 9 + 1, 10)
        a = np.asarray(im).astype(int)
    assert (a[..., 0] != a[..., 1]).any()


def test_animation_shows_each_write_window_in_red_in_its_own_cell(tmp_path):
    path = tmp_path / "draw.gif"
    n_frames = animate(grey_canvases(), path, writes=writes_with(STEP1), N=3, scale=3)
    frames, durations = read_frames(path)
    assert n_frames == len(frames) == 4
    assert durations == [100, 100, 100, 1000]
    assert frames[0].shape == (3 * 20, 3 * 38, 3)
    assert not is_red(frames[0]).any()
    for f in frames:  # the grey canvases stay grey; red is the only colour
        grey = ~is_red(f)
        assert (f[grey][:, 0] == f[grey][:, 1]).all() and (f[grey][:, 1] == f[grey][:, 2]).all()
    assert not is_red(frames[1]).any() and not is_red(frames[3]).any()  # windows off-image

    red = is_red(frames[2])  # [y, x]
    # image 0: x 25..37, y 19..31, line width 1 (sigma = 0.5)
    assert red[19:32, 25].all() and red[19:32, 37].all()  # left and right
    assert red[19, 25:38].all() and red[31, 25:38].all()  # top and bottom
    assert red[19:32, 25:38].sum() == 4 * 12
    assert not red[20:31, 26:37].any()  # inside
    assert not red[25, 24] and not red[25, 38] and not red[18, 30] and not red[32, 30]  # just outside
    # image 1, in its own cell: x 67..73, y 37..43
    assert red[37:44, 67].all() and red[37:44, 73].all()
    assert red[37, 67:74].all() and red[43, 67:74].all()
    assert red.sum() == 4 * 12 + 4 * 6


def test_a_wider_filter_draws_a_thicker_line(tmp_path):
    def left_edge(sigma2):
        writes = writes_with(STEP1, (sigma2, sigma2))
        animate(grey_canvases(), tmp_path / "w.gif", writes=writes, N=3, scale=3)
        return is_red(read_frames(tmp_path / "w.gif")[0][2])[25, 6:54]  # image 0, row 25

    thin, thick = left_edge(0.25), left_edge(4.0)  # sigma 0.5 -> 1 pixel; sigma 2 -> 3 pixels
    assert np.flatnonzero(thin).tolist() == [25 - 6, 37 - 6]
    assert np.flatnonzero(thick).tolist() == [24 - 6, 25 - 6, 26 - 6, 36 - 6, 37 - 6, 38 - 6]


def test_windows_are_clipped_to_their_image(tmp_path):
    # image 0: g_x = 15, delta = 4 -> x 10..18 (0-based), past the right border (15);
    # image 1: entirely above its image. Frame: image 0's cell is x 6..53, the padding 54..59.
    partly_out = dict(g_x=[15.0, 8.0], g_y=[7.0, -30.0], delta=[4.0, 2.0])
    animate(grey_canvases(), tmp_path / "clip.gif", writes=writes_with(partly_out), N=3, scale=3)
    red = is_red(read_frames(tmp_path / "clip.gif")[0][2])
    assert red[:, 6 + 3 * 10 + 1].any()  # the left edge
    assert red[:, 53].sum() == 2  # top and bottom edges run to the border, no right edge there
    assert not red[:, 54:].any()  # nothing in the padding or in image 1
    assert not red[:6].any() and not red[54:].any()


def test_colour_canvases_give_a_colour_gif(tmp_path):
    canvases = torch.rand(3, 2, 3, 12, 12)
    writes = glimpse(g_x=[[6.0] * 2] * 2, g_y=[[6.0] * 2] * 2, delta=[[2.0] * 2] * 2, sigma2=[[1.0] * 2] * 2)
    assert animate(canvases, tmp_path / "colour.gif", writes=writes, N=3) == 3
    frames, durations = read_frames(tmp_path / "colour.gif")
    assert durations == [100, 100, 1000]
    assert frames[0].shape == (7 * (12 + 2 + 2), 7 * (2 * 14 + 2), 3)  # default scale: 7 x 12 >= 84
    a = frames[-1].astype(int)
    assert (np.abs(a[..., 0] - a[..., 1]) > 20).mean() > 0.3
    assert not is_red(frames[0]).any() and is_red(frames[1]).any() and is_red(frames[2]).any()


@pytest.mark.parametrize("name, kwargs, frames", [
    ("draw", dict(T=3, hidden_dim=8, latent_dim=2, write_size=3), 4),
    ("vae", dict(hidden_dim=8, latent_dim=2), 1),
])
def test_zoo_models_animate(tmp_path, name, kwargs, frames):
    model = drawzoo.load(name, **kwargs)
    if name == "draw":
        canvases, writes = model.generate(4, return_attention=True)
        extra = dict(writes=writes, N=model.config.write_size)
    else:
        canvases, extra = model.generate(4), {}
    assert animate(canvases, tmp_path / "zoo.gif", **extra) == frames
    shown, _ = read_frames(tmp_path / "zoo.gif")
    assert shown[0].shape == (3 * (2 * 30 + 2), 3 * (2 * 30 + 2), 3)  # 2 x 2 grid of 28 px, 3x
    assert is_red(shown[-1]).any() == (name == "draw")


def _writes(T=2, n=2, **changes):
    fields = dict(g_x=torch.full((T, n), 5.0), g_y=torch.full((T, n), 5.0), delta=torch.ones(T, n),
                  sigma2=torch.ones(T, n), gamma=torch.ones(T, n))
    return Glimpse(**{**fields, **changes})


OK = torch.rand(3, 2, 1, 8, 8)


@pytest.mark.parametrize("call", [
    lambda p: save_grid(torch.rand(1, 8, 8), p / "x.png"),
    lambda p: save_grid(torch.rand(2, 1, 8, 8) * 2, p / "x.png"),
    lambda p: save_grid(torch.full((2, 1, 8, 8), float("nan")), p / "x.png"),
    lambda p: save_grid(torch.rand(2, 2, 8, 8), p / "x.png"),
    lambda p: save_grid(torch.ones(2, 1, 8, 8, dtype=torch.uint8), p / "x.png"),
    lambda p: save_grid(np.random.rand(2, 1, 8, 8), p / "x.png"),
    lambda p: save_grid(torch.rand(0, 1, 8, 8), p / "x.png"),
    lambda p: save_grid(torch.rand(2, 1, 8, 8), p / "x.png", nrow=0),
    lambda p: animate(torch.rand(2, 1, 8, 8), p / "x.gif"),
    lambda p: animate(OK - 0.5, p / "x.gif"),
    lambda p: animate(OK, p / "x.gif", writes=_writes()),
    lambda p: animate(OK, p / "x.gif", N=3),
    lambda p: animate(OK, p / "x.gif", writes=_writes(T=3), N=3),
    lambda p: animate(OK, p / "x.gif", writes=_writes(n=3), N=3),
    lambda p: animate(OK, p / "x.gif", writes=_writes(delta=torch.full((2, 2), float("inf"))), N=3),
    lambda p: animate(OK, p / "x.gif", writes=_writes(sigma2=-torch.ones(2, 2)), N=3),
    lambda p: animate(OK, p / "x.gif", writes=_writes(), N=0),
    lambda p: animate(OK, p / "x.gif", scale=0),
    lambda p: animate(OK, p / "x.gif", duration_ms=-1),
])
def test_bad_inputs_raise_value_error(tmp_path, call):
    with pytest.raises(ValueError):
        call(tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_good_versions_of_the_bad_inputs_work(tmp_path):
    save_grid(torch.rand(2, 1, 8, 8), tmp_path / "x.png")
    assert animate(OK, tmp_path / "x.gif", writes=_writes(), N=3, duration_ms=0) == 3


def test_a_single_image_has_no_padding(tmp_path):
    # make_grid returns one image as it is: g = 8, delta = 2 -> x, y 5..9 (0-based) -> 16..28 at scale 3
    writes = glimpse(g_x=[[8.0]], g_y=[[8.0]], delta=[[2.0]], sigma2=[[0.25]])
    assert animate(grey_canvases(T=1, n=1), tmp_path / "one.gif", writes=writes, N=3, scale=3) == 2
    red = is_red(read_frames(tmp_path / "one.gif")[0][1])
    assert red.shape == (48, 48)
    assert red[16:29, 16].all() and red[16:29, 28].all() and red.sum() == 4 * 12


def test_pillow_merges_identical_frames(tmp_path):
    # the documented exception to T+1 frames: steps that change nothing visible
    canvases = torch.full((4, 2, 1, 8, 8), 0.5)
    assert animate(canvases, tmp_path / "still.gif") == 1
    assert read_frames(tmp_path / "still.gif")[1] == [1300]
