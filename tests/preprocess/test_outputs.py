import numpy as np

from vsm_kit.preprocess import STEPS, open_output, preprocess
from vsm_kit.viz import plot_boxes_per_record, render_png


def test_output_views_show_what_was_written(world_copy):
    summary = {r.step: r for r in preprocess(world_copy, progress=False).steps}
    tables = {}
    for step in STEPS:
        view = open_output(step, world_copy)
        table = view.box_table()
        tables[step] = table
        assert len(view) == summary[step].images and len(table) == summary[step].boxes
        rec = view[0]
        assert rec.image_path.exists() and rec.targets
        assert sum(len(t.boxes_xyxy) for t in rec.targets) == int((table.record == 0).sum())
    objects = open_output("objects365", world_copy)
    assert all("/" not in t.text or t.text.count("/") == 1 for r in objects for t in r.targets)
    assert render_png(plot_boxes_per_record(tables)).startswith(b"\x89PNG")


def test_goldg_output_phrases_match_the_reader(demo_world, world_copy):
    # with each annotation on its own image (the original's rule moves Flickr boxes)
    preprocess(world_copy, only=["goldg"], fix_goldg_ids=True, progress=False)
    out = open_output("goldg", world_copy)
    truth = {
        (r.image, r.caption): r for t in ("goldg_mixed", "flickr") for r in demo_world.truth[t]
    }
    for rec in out:
        exp = truth[(rec.image_path.relative_to(world_copy).as_posix(), rec.caption)]
        assert [t.text for t in rec.targets] == [t.text for t in exp.targets]
        for t, e in zip(rec.targets, exp.targets, strict=True):
            assert np.array_equal(t.boxes_xyxy, e.boxes_xyxy)
