import re

import matplotlib.pyplot as plt
import pytest

import ddpm_helpers as dh


def draw(value):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, value])
    ax.set_title(f"value {value}")
    return fig


def test_frame_slider_has_one_frame_and_label_per_value_and_no_external_url():
    open_before = plt.get_fignums()  # figures other tests left open are not this test's leak
    slider = dh.interactive.frame_slider(draw, [1, 2, 3], title="a <test> & more")
    assert len(slider.frames) == 3 and slider.labels == ("1", "2", "3")
    page = slider.to_html()
    assert page.count("data:image/png;base64,") == 3 + 1  # every frame inlined, plus the first shown
    assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", page), "the figure must not refer to anything outside itself"
    assert 'max="2"' in page and "addEventListener('input'" in page
    assert "a &lt;test&gt; &amp; more" in page  # the title is escaped
    assert slider._repr_html_().startswith('<div class="dh-frames"')
    assert slider.size_bytes == len(page.encode())
    assert plt.get_fignums() == open_before  # each drawn figure was closed


def test_two_sliders_on_one_page_do_not_share_an_id():
    a = dh.interactive.frame_slider(draw, [1, 2]).to_html()
    b = dh.interactive.frame_slider(draw, [1, 2]).to_html()
    ids = re.findall(r'id="([^"]+)"', a + b)
    assert len(ids) == len(set(ids)) == 2


def test_frame_slider_refuses_bad_input_by_name():
    png = dh.interactive.figure_png(draw(1))
    with pytest.raises(ValueError, match="labels must give one label per frame: 2 frames, 1 labels"):
        dh.interactive.FrameSlider((png, png), ("a",))
    with pytest.raises(ValueError, match="at least 2"):
        dh.interactive.FrameSlider((png,), ("a",))
    with pytest.raises(ValueError, match="PNG bytes"):
        dh.interactive.FrameSlider((png, b"GIF89a"), ("a", "b"))
    with pytest.raises(ValueError, match=r"start must index a frame, in \[0, 1\], got 2"):
        dh.interactive.FrameSlider((png, png), ("a", "b"), start=2)
    with pytest.raises(ValueError, match="over its budget of max_bytes"):
        dh.interactive.FrameSlider((png, png), ("a", "b"), max_bytes=1_000)


def test_the_same_frames_drive_an_ipywidget():
    slider = dh.interactive.frame_slider(draw, [1, 2, 3])
    box = slider.widget()
    _, selector, image = box.children
    assert image.value == slider.frames[0]
    selector.value = 2
    assert image.value == slider.frames[2]


def test_the_text_fallback_is_short_and_names_the_slider():
    slider = dh.interactive.frame_slider(draw, [1, 2, 3], title="three values")
    text = repr(slider)
    assert text == "<FrameSlider: 3 frames of 'three values', labels '1' to '3'>"
    assert len(text) < 200 and "PNG" not in text  # not the frames' bytes (megabytes in a stored notebook)
