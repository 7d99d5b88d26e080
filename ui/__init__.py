"""netscope ui: the browser viewer (`netscope ui`), a Gradio app that is a
client of a netscope server through netscope.client only.

Modules, one job each: `offline` (no analytics, no CDN, system fonts),
`app` (the page: tabs and their wiring), `views` (the calls to the server
and what each tab shows, without Gradio), `maps_html` (explanation maps
with the value under the cursor), `charts` (histograms and the gradient-flow
chart, matplotlib), `option_form` (the method registry's options as form
controls), `job_folder` (a `netscope explain` output folder read without
touching it), `examples` (bundled example images). Gradio is imported only
by `app` and `offline`; `netscope ui` imports them lazily.
"""
