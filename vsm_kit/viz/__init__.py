"""Figures for people: overlays, sample grids, statistics. Nothing here displays; all return."""

from .overlay import (
    draw_detections,
    draw_record,
    overlay_masks,
    render_png,
    sample_grid,
    target_color,
)
from .plots import plot_box_sizes, plot_boxes_per_record, plot_class_frequency, plot_overview
from .search import draw_search_path, draw_step
from .training import latest_by_step, plot_training

__all__ = [
    "draw_detections",
    "draw_record",
    "draw_search_path",
    "draw_step",
    "latest_by_step",
    "overlay_masks",
    "plot_box_sizes",
    "plot_boxes_per_record",
    "plot_class_frequency",
    "plot_overview",
    "plot_training",
    "render_png",
    "sample_grid",
    "target_color",
]
