"""The RANDOM WEIGHTS banner each tab shows at its top: the same text wherever a model's answers appear."""

from __future__ import annotations

import gradio as gr

from gui.context import AppContext


def random_banner(ctx: AppContext) -> gr.Markdown:
    """The banner for the model now served: shown for random weights, hidden otherwise.

    Made under ``gr.Blocks`` it is a new component; returned from an event, the update of one
    (the model switch and the first-run setup refresh every tab's banner this way).
    """
    text = ctx.banner()
    return gr.Markdown(text, visible=bool(text))
