"""Figures in the layouts of Barnett et al. (2021): Fig. 3 (a case's reasoning), Fig. 4 (with and
without the fine-annotation loss), Fig. 5 (class activation map vs GradCAM / GradCAM++), Fig. 6
(activation precision), plus the prototype gallery, the whole mammogram with the region boxed, ROC
curves and training curves. One style for all (:mod:`.style`: colours, the fitted heat scale, the
helpers); the figures in :mod:`.explanations` (one model's reasoning) and :mod:`.evaluation`
(metrics and training). Every name is importable from ``iaiabl_lib.plots``."""
from __future__ import annotations

from .evaluation import plot_activation_precision, plot_fine_vs_nofine, plot_history, plot_roc
from .explanations import (plot_cam_comparison, plot_case_explanation, plot_prototype_gallery,
                           plot_whole_view, scale_bar_mm, SCALE_BARS_MM)
from .style import (ACTIVATION_CMAP, BOX_COLOUR, CLASS_COLOURS, HEAT_FLOOR, MASK_COLOUR, OVERLAY_ALPHA,
                    SIMILARITY_CMAP, SIMILARITY_LABEL, STAGE_COLOURS, STYLE, TOP_COLOUR,
                    TOP_INSIDE_COLOUR, HeatScale, draw_heat, figure_png, fit_heat_scale, heat_colourbar,
                    heat_rgba, similarity_rgb)

__all__ = [
    "STYLE", "ACTIVATION_CMAP", "SIMILARITY_CMAP", "SIMILARITY_LABEL", "HEAT_FLOOR", "HeatScale",
    "fit_heat_scale", "similarity_rgb", "heat_rgba", "draw_heat", "heat_colourbar", "CLASS_COLOURS",
    "plot_case_explanation", "plot_prototype_gallery",
    "plot_cam_comparison", "plot_activation_precision", "plot_fine_vs_nofine", "plot_roc",
    "plot_history", "figure_png", "plot_whole_view", "scale_bar_mm", "SCALE_BARS_MM",
    "BOX_COLOUR", "MASK_COLOUR", "TOP_COLOUR", "TOP_INSIDE_COLOUR", "OVERLAY_ALPHA", "STAGE_COLOURS",
]
