import numpy as np
import pytest
from matplotlib.patches import Rectangle

from vsm_kit.data import open_source, source_stats
from vsm_kit.data.stats import class_frequency
from vsm_kit.viz import (
    draw_record,
    overlay_masks,
    plot_box_sizes,
    plot_class_frequency,
    plot_overview,
    render_png,
    sample_grid,
    target_color,
)


def test_overlay_changes_only_masked_pixels():
    img = np.full((4, 4, 3), 100, np.uint8)
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True
    out = overlay_masks(img, [m], alpha=0.5)
    assert (out[~m] == 100).all()
    expected = (0.5 * 100 + 0.5 * np.array(target_color(0)) * 255).astype(np.uint8)
    assert np.abs(out[m].astype(int) - expected).max() <= 1


def test_draw_record_draws_one_box_per_annotation(demo_world):
    rec = open_source("objects365", demo_world.dataset)[1]
    fig = draw_record(rec)
    rects = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rects) == sum(len(t.boxes_xyxy) for t in rec.targets)
    assert render_png(fig).startswith(b"\x89PNG")
    fig = draw_record(rec, boxes=False)
    assert not fig.axes[0].patches


def test_masks_toggle_changes_the_picture(demo_world):
    rec = open_source("refcoco", demo_world.dataset)[0]
    with_masks = draw_record(rec, masks=True).axes[0].images[0].get_array()
    plain = draw_record(rec, masks=False).axes[0].images[0].get_array()
    assert not np.array_equal(with_masks, plain)


def test_grid_skips_unreadable_images_and_says_so(world_copy):
    src = open_source("cocostuff", world_copy)
    src[0].image_path.write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="Cannot decode image"):
        fig = sample_grid(src, indices=[0, 1, 2])
    assert len(fig.skipped) == 1 and "1 unreadable skipped" in fig._suptitle.get_text()


def test_statistics_and_plots(demo_world):
    src = open_source("objects365", demo_world.dataset)
    st = source_stats(src)
    table = src.box_table()
    assert st.records == len(src) and st.boxes == len(table) == sum(
        len(t.boxes_xyxy) for r in src for t in r.targets
    )
    freq = class_frequency(table)
    assert sum(c for _, c in freq) == len(table)
    assert [c for _, c in freq] == sorted((c for _, c in freq), reverse=True)
    for fig in (
        plot_overview([st]),
        plot_class_frequency({"objects365": table}),
        plot_box_sizes({"objects365": table}),
    ):
        assert render_png(fig)
