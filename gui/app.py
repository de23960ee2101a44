"""The Gradio app: the header and one tab per view, arranged under ``gr.Blocks``, for one role.

The views live in ``gui/views/`` (their logic as plain functions, and a ``build_tab`` that lays
the tab out and names its events with ``api_name`` for ``gradio_client``). What one tab reads from
another is passed here, explicitly: the Compare tab's last answer to Cost and AWS, the Cost tab's
prices to Tune, every banner to the model switch.

A viewer's app is built without the operator's tabs and events (Tune, AWS, the export): Gradio serves
only the events a ``gr.Blocks`` registers, so they do not exist for a viewer, through the page or the API.
"""

from __future__ import annotations

import gradio as gr

from gui.access import Access
from gui.context import AppContext
from gui.views import aws, compare, cost, model, monitor, scenario, tune

# Gradio's cache (uploads, and copies of returned files): swept every 5 minutes of what is over 30 minutes
# old, and emptied when the app stops.
DELETE_CACHE = (300, 1800)


def build_app(ctx: AppContext, access: Access | None = None) -> gr.Blocks:
    """The whole app for one context and role (the operator's by default); tests call this and launch with
    ``prevent_thread_lock``."""
    access = access or Access()
    with gr.Blocks(title="resnet-serverless: server vs serverless", delete_cache=DELETE_CACHE) as demo:
        controls = model.build_header(ctx, access)
        with gr.Tabs(visible=ctx.model_ready()) as tabs:
            compared = compare.build_tab(ctx, access)
            monitor_banner = monitor.build_tab(ctx, access)
            costs = cost.build_tab(ctx, access, last=compared.last)
            if access.operator:
                tune.build_tab(ctx, access, prices=costs.prices)
            scenario.build_tab(ctx, prices=costs.prices, access=access)
            if access.operator:
                aws.build_tab(ctx, last=compared.last)
        model.wire(demo, ctx, access, controls, tabs=tabs, banners=[compared.banner, monitor_banner, costs.banner])
    return demo
