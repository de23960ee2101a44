"""Launch the app: authentication rules for sharing, an honest word when no public link was made."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from gui.app import build_app
from gui.context import AppContext
from lambda_onnx.sidecar import load_verified
from local.clients.targets import Targets


class UsageError(ValueError):
    """Options that would do something unsafe or impossible."""


@dataclass(frozen=True)
class LaunchOptions:
    host: str = "127.0.0.1"
    port: int | None = 7860
    share: bool = False
    auth: str | None = None  # "user:password"
    no_auth: bool = False
    # Uploads are read whole to preview and downscale them; without a cap Gradio takes any size.
    # 100 MB is several times a 48 MP phone photo; the classifier's own limits are far lower.
    max_upload_mb: int = 100


def parse_auth(options: LaunchOptions) -> tuple[str, str] | None:
    """A shared app never goes public without a login unless --no-auth says so explicitly."""
    if options.auth:
        user, sep, password = options.auth.partition(":")
        if not sep or not user or not password:
            raise UsageError("--auth takes USER:PASS")
        return user, password
    if options.share and not options.no_auth:
        raise UsageError("--share makes the app public: give --auth USER:PASS, or --no-auth to share it without a login")
    return None


@dataclass
class Running:
    demo: gr.Blocks
    context: AppContext
    local_url: str
    share_url: str | None

    def close(self) -> None:
        self.demo.close()
        self.context.close()


def launch(targets: Targets, options: LaunchOptions, *, block: bool = False, quiet: bool = False) -> Running:
    """Build and start the app; with ``block`` serve until interrupted, then stop the emulators.

    A model that is there but does not match its sidecar (truncated, corrupt, sidecar missing) is a
    :class:`~lambda_onnx.errors.ModelLoadError` now, not an error on the first click; no model at
    all opens the first-run export view instead."""
    auth = parse_auth(options)
    context = AppContext(targets)
    if context.model_ready():
        load_verified(context.model_path)
    demo = build_app(context)
    demo.queue(default_concurrency_limit=4)
    _, local_url, share_url = demo.launch(server_name=options.host, server_port=options.port, share=options.share,
                                          auth=auth, prevent_thread_lock=True, quiet=quiet, footer_links=["api", "gradio"],
                                          max_file_size=options.max_upload_mb * 2**20)
    if options.share and not share_url:
        context.share_status = (f"⚠️ No public link could be made (no network access to Gradio's share servers?). "
                                f"The app is serving locally only, at {local_url}.")
        print(context.share_status, flush=True)
    elif share_url:
        context.share_status = f"🌐 Public link: {share_url}" + (" (login required)" if auth else " (NO LOGIN: anyone with the link)")
        print(context.share_status, flush=True)
    running = Running(demo, context, local_url, share_url)
    if block:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            running.close()
    return running
