"""The page: six tabs over one server, wired to views.py. Gradio (>= 5) is
the UI library: made for ML tools (image, label, gallery, plot and table
components, queued events with progress, click-to-enlarge galleries), so the
page is a few hundred lines; what it lacks (the value under the cursor, a job
table with thumbnails) is a small gr.HTML block with its own script."""
from __future__ import annotations

import functools
import html
import logging
import tempfile
from pathlib import Path

from . import offline

offline.prepare()  # before gradio reads its environment

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from netscope.client import Client, NetscopeError  # noqa: E402

from . import job_folder, job_html, maps_html, option_form, views  # noqa: E402
from .examples import write_examples  # noqa: E402

log = logging.getLogger("netscope.ui")

CSS = maps_html.CSS + job_html.CSS + """
footer { display: none !important; }
"""


def shown(fn):
    """Errors become a message on the page: the server's code and message, or what to change in the
    form; never a trace."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NetscopeError as exc:
            raise gr.Error(html.escape(f"{exc.code.name}: {exc.message}"), print_exception=False) from None
        except (ValueError, OSError) as exc:
            raise gr.Error(html.escape(str(exc)), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - a fault of the viewer: say what, log the trace
            log.exception("netscope ui: %s failed", fn.__name__)
            raise gr.Error(html.escape(f"the viewer failed: {type(exc).__name__}: {exc}"),
                           print_exception=False) from None
    return wrapper


def build(viewer: views.Viewer, *, job: str = "", images: str = "") -> gr.Blocks:
    server = viewer.server
    models = viewer.model_ids()
    first = models[0] if models else None
    schema = list(server.options)
    examples = write_examples(Path(tempfile.gettempdir()) / "netscope-ui-examples")

    with gr.Blocks(title="netscope", analytics_enabled=False) as app:
        gr.Markdown(f"## netscope &nbsp; <small>{html.escape(viewer.client.target)} · server {server.version} · "
                    f"torch {server.build.torch}</small>")
        with gr.Row():
            model = gr.Dropdown(models, value=first, label="model", elem_id="model", scale=3)
            refresh = gr.Button("Refresh models", scale=1)

        with gr.Tabs():
            # ------------------------------------------------ models
            with gr.Tab("Models", id="models"):
                listing = gr.Dataframe(viewer.models_rows(), headers=["model", "arch", "source", "device", "dtype",
                                                                      "classes", "pretrained"],
                                       label="loaded models", interactive=False)
                with gr.Accordion("Load a model (needs an admin token)", open=False):
                    with gr.Row():
                        new_id = gr.Textbox(label="id", placeholder="r18")
                        new_source = gr.Textbox(label="source", placeholder="resnet18, or a checkpoint in the store")
                        new_weights = gr.Textbox(label="weights", placeholder="none, DEFAULT or an enum name")
                    load = gr.Button("Load")
                totals = gr.Markdown(elem_id="totals")
                layers_table = gr.Dataframe(headers=["layer", "type", "output", "parameters", "mult-adds"],
                                            label="summary", interactive=False, max_height=420)

            # ------------------------------------------------ one image
            with gr.Tab("One image", id="image"):
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(type="filepath", label="image (upload or drop)", elem_id="image",
                                         sources=["upload", "clipboard"], height=320)
                        gr.Examples(examples, inputs=image, label="examples")
                    with gr.Column():
                        k = gr.Slider(1, 20, value=5, step=1, label="top-k")
                        predict = gr.Button("Predict", variant="primary")
                        topk = gr.Label(label="top-k", elem_id="topk")

            # ------------------------------------------------ why
            with gr.Tab("Why", id="why"):
                with gr.Row():
                    with gr.Column(scale=2):
                        methods = gr.CheckboxGroup([m.name for m in server.methods],
                                                   value=[server.default_method] if server.default_method else [],
                                                   label="methods", elem_id="methods",
                                                   info="; ".join(f"{m.name}: {m.cost}" for m in server.methods[:0]))
                    with gr.Column(scale=1):
                        target_mode = gr.Radio(list(views.TARGETS), value="top-1", label="target")
                        class_name = gr.Dropdown([], label="class (type to search)", allow_custom_value=True,
                                                 filterable=True, elem_id="class")
                        top_k = gr.Number(3, precision=0, label="k (top-k)", minimum=1)
                        faithful = gr.Checkbox(False, label="faithfulness metrics (slower)")
                with gr.Accordion("options (from the server's method registry)", open=True):
                    with gr.Row(equal_height=False):
                        option_controls = option_form.controls(schema)
                explain = gr.Button("Explain", variant="primary", elem_id="explain")
                maps = gr.HTML(maps_html.cards_html([]), js_on_load=maps_html.HOVER_JS, elem_id="maps")
                downloads = gr.File(label="download: overlay PNGs and raw maps (.npy)", file_count="multiple",
                                    elem_id="downloads")

            # ------------------------------------------------ layers
            with gr.Tab("What layers see", id="layers"):
                with gr.Row():
                    layer = gr.Dropdown([], label="layer (the model's tree)", elem_id="layer", filterable=True, scale=3)
                    channels = gr.Slider(4, 64, value=16, step=4, label="channels", scale=1)
                show_maps = gr.Button("Show feature maps and kernels", variant="primary", elem_id="show-maps")
                about = gr.Markdown()
                gallery = gr.Gallery(label="feature maps (click to enlarge)", columns=8, height="auto",
                                     allow_preview=True, elem_id="feature-maps")
                kernel_grid = gr.Image(label="kernels (conv layers)", type="pil", elem_id="kernels", height=360)

            # ------------------------------------------------ statistics
            with gr.Tab("Statistics", id="stats"):
                with gr.Row():
                    stat_layers = gr.Dropdown([], multiselect=True, label="layers for histograms (default: the first 8)",
                                              scale=3)
                    stat_target = gr.Textbox(label="target (class index or name; default the top-1)", scale=1)
                show_stats = gr.Button("Weights and gradients for the image", variant="primary", elem_id="show-stats")
                flow = gr.Plot(label="gradient flow", elem_id="flow")
                hist = gr.Plot(label="histograms", elem_id="hist")

            # ------------------------------------------------ a batch job
            with gr.Tab("A batch job", id="job"):
                with gr.Row():
                    job_dir = gr.Textbox(job, label="job folder (netscope explain --out)", elem_id="job-dir", scale=3)
                    originals = gr.Textbox(images, label="images folder the job read (for the originals)", scale=2)
                    open_job = gr.Button("Open", scale=1, elem_id="open-job")
                with gr.Row():
                    job_method = gr.Dropdown([], label="method", scale=1)
                    which = gr.Dropdown(list(job_folder.FILTERS), value="all", label="show", elem_id="job-filter",
                                        scale=1)
                    search = gr.Textbox(label="search", scale=1)
                    sort = gr.Dropdown([], label="sort by", elem_id="job-sort", scale=1)
                    descending = gr.Checkbox(False, label="descending", elem_id="job-desc", scale=1)
                    page = gr.Number(1, precision=0, minimum=1, label="page", scale=1)
                note = gr.Markdown()
                table = gr.HTML("", js_on_load=job_html.CLICK_JS, elem_id="job-table", max_height=520)
                pick = gr.Textbox(label="image id (click a row)", elem_id="job-pick")
                with gr.Row():
                    big_overlay = gr.Image(label="overlay", type="pil", elem_id="job-overlay", height=420)
                    big_original = gr.Image(label="original", type="pil", elem_id="job-original", height=420)
                row_info = gr.JSON(label="row")
                seen = gr.State(())
                timer = gr.Timer(3.0)

        # ------------------------------------------------ wiring
        @shown
        def on_model(m):
            if not m:
                return [gr.update()] * 6
            info = viewer.info(m)
            rows, text = viewer.summary(m)
            tree = viewer.layer_choices(m)
            default = info.default_cam_layer if any(n == info.default_cam_layer for _, n in tree) else None
            return (rows, text, gr.update(choices=info.class_names, value=None),
                    gr.update(choices=tree, value=default),
                    gr.update(choices=viewer.layer_choices(m, with_parameters=True), value=[]), gr.update())

        model_outputs = [layers_table, totals, class_name, layer, stat_layers, listing]
        model.change(on_model, model, model_outputs)
        app.load(on_model, model, model_outputs)

        @shown
        def on_refresh(m):
            ids = viewer.model_ids()
            return gr.update(choices=ids, value=m if m in ids else (ids[0] if ids else None)), viewer.models_rows()

        refresh.click(on_refresh, model, [model, listing])

        @shown
        def on_load(new, source, weights, progress=gr.Progress()):
            progress(0, desc=f"loading {source} as {new}")
            info = viewer.load(new, source, weights)
            ids = viewer.model_ids()
            return gr.update(choices=ids, value=info.model), viewer.models_rows()

        load.click(on_load, [new_id, new_source, new_weights], [model, listing])

        @shown
        def on_predict(m, img, kk):
            return viewer.predict(m, img, kk) if img else None

        predict.click(on_predict, [model, image, k], topk)
        image.change(on_predict, [model, image, k], topk)

        def on_methods(chosen):
            return [gr.update(visible=option_form.visible(o, chosen)) for o in schema]

        methods.change(on_methods, methods, option_controls)
        app.load(on_methods, methods, option_controls)

        @shown
        def on_explain(m, img, chosen, mode, cls, kk, faith, *values, progress=gr.Progress()):
            cards, files = viewer.explain(m, img, chosen, mode, cls, kk, faith, list(values), progress=progress)
            return maps_html.cards_html(cards), files

        explain.click(on_explain, [model, image, methods, target_mode, class_name, top_k, faithful, *option_controls],
                      [maps, downloads])

        @shown
        def on_layer(m, img, name, n):
            tiles, text = viewer.feature_maps(m, img, name, n)
            return tiles, text, viewer.kernels(m, name)

        show_maps.click(on_layer, [model, image, layer, channels], [gallery, about, kernel_grid])

        @shown
        def on_stats(m, img, names, tgt):
            return viewer.statistics(m, img, names or [], tgt or "")

        show_stats.click(on_stats, [model, image, stat_layers, stat_target], [hist, flow])

        # ------------------------------------------------ batch job
        @shown
        def on_open(folder):
            found = job_folder.methods(folder)
            name = next(iter(found))
            return gr.update(choices=list(found), value=name)

        def job_view(folder, method, flt, text, col, desc, pg):
            found = job_folder.methods(folder)
            tbl = job_folder.read(found.get(method) or next(iter(found.values())))
            rows = job_folder.select(tbl, which=flt, text=text or "", sort=col or "", descending=bool(desc))
            pages = max(1, -(-len(rows) // job_html.PAGE))
            pg = min(max(1, int(pg or 1)), pages)
            spec = tbl.spec
            said = (f"model `{spec.get('model', '?')}`, method `{spec.get('method', '?')}`; "
                    f"{sum(r.get('status') == 'ok' for r in tbl.rows)} explained, "
                    f"{sum(r.get('status') != 'ok' for r in tbl.rows)} failed")
            if flt == "misclassified" and "targets" in spec:
                said += ("; this job explained each image for its folder's class, so its index cannot tell "
                         "a misclassified image")
            sorts = [c for c in tbl.columns if c != "overlay"]
            return (job_html.table_html(tbl, rows, pg - 1), said, gr.update(choices=sorts), job_folder.stamp(tbl.folder))

        job_inputs = [job_dir, job_method, which, search, sort, descending, page]
        job_outputs = [table, note, sort, seen]
        shown_view = shown(job_view)
        open_job.click(on_open, job_dir, job_method).then(shown_view, job_inputs, job_outputs)
        for control in (job_method, which, sort, descending, page):
            control.change(shown_view, job_inputs, job_outputs)
        search.submit(shown_view, job_inputs, job_outputs)

        def on_tick(folder, method, flt, text, col, desc, pg, last):
            """Re-read the index when the running job has appended to it."""
            if not folder or not method:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            try:
                path = job_folder.methods(folder).get(method)
            except OSError:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            if path is None or job_folder.stamp(path) == tuple(last or ()):
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return job_view(folder, method, flt, text, col, desc, pg)

        timer.tick(on_tick, [*job_inputs, seen], job_outputs, show_progress="hidden")

        @shown
        def on_pick(folder, method, item_id, images_folder):
            if not item_id:
                return None, None, None
            found = job_folder.methods(folder)
            tbl = job_folder.read(found.get(method) or next(iter(found.values())))
            row = next((r for r in tbl.rows if r["id"] == item_id), None)
            if row is None:
                raise ValueError(f"no image {item_id!r} in this job's index")
            over = job_folder.overlay_path(tbl, row)
            orig = job_folder.original_path(images_folder, item_id)
            return (Image.open(over) if over else None, Image.open(orig).convert("RGB") if orig else None, row)

        pick.change(on_pick, [job_dir, job_method, pick, originals], [big_overlay, big_original, row_info])
        if job:
            app.load(on_open, job_dir, job_method)
    return app


def launch(client: Client, *, host: str = "127.0.0.1", port: int = 7860, job: str = "", images: str = "",
           block: bool = True) -> gr.Blocks:
    """Build the page for the server `client` talks to and serve it at http://host:port/.
    block=False returns at once (the page keeps serving until app.close())."""
    app = build(views.Viewer(client), job=job, images=images)
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=True,
               show_error=False, ssr_mode=False, theme=offline.theme(), css=CSS, enable_monitoring=False,
               allowed_paths=[tempfile.gettempdir()] + ([job] if job else []) + ([images] if images else []))
    return app
