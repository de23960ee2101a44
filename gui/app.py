"""The Gradio app: the header and one tab per view, arranged under ``gr.Blocks``.

The views live in ``gui/views/`` (their logic as plain functions, and a ``build_tab`` that lays
the tab out and names its events with ``api_name`` for ``gradio_client``). What one tab reads from
another is passed here, explicitly: the Compare tab's last answer to Cost and AWS, the Cost tab's
prices to Tune, every banner to the model switch.
"""

from __future__ import annotations

import gradio as gr

from gui.context import AppContext
from gui.views import aws, compare, cost, model, monitor, scenario, tune


def build_app(ctx: AppContext) -> gr.Blocks:
    """The whole app for one context; tests call this and launch with ``prevent_thread_lock``."""
    with gr.Blocks(title="resnet-serverless: server vs serverless") as demo:
        controls = model.build_header(ctx)
        with gr.Tabs(visible=ctx.model_ready()) as tabs:
            compared = compare.build_tab(ctx)
            monitor_banner = monitor.build_tab(ctx)
            costs = cost.build_tab(ctx, last=compared.last)
            tune.build_tab(ctx, prices=costs.prices)
            scenario.build_tab(ctx, prices=costs.prices)
            aws.build_tab(ctx, last=compared.last)
        model.wire(demo, ctx, controls, tabs=tabs, banners=[compared.banner, monitor_banner, costs.banner])
    return demo
