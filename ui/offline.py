"""Keep the viewer off the network: no analytics or telemetry, no share links,
no web fonts or CDN assets (system font stacks), and nothing from the
Hugging Face Hub. `prepare()` runs before Gradio is first imported."""
from __future__ import annotations

import os

# Set before gradio (and huggingface_hub, which it imports) read them.
_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SSR_MODE": "False",  # server-side rendering would need node; the static page is enough
}

SANS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial",
        "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]


def prepare() -> None:
    """Switch off everything in Gradio that would reach the network."""
    for key, value in _ENV.items():
        os.environ[key] = value


def theme():
    """Gradio's default theme with the system's fonts, so the page asks no font server."""
    import gradio as gr

    return gr.themes.Default(font=SANS, font_mono=MONO)
