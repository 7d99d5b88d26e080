"""The method registry's options as form controls, from the server's schema
(GetServerInfo; client/server_info.py's OptionSchema), the way the CLI makes
flags of them (cli/option_flags.py): a bool
or a string with choices a dropdown, a number or any other string a text box. Left
empty ("default"), an option is not sent and the method uses its own
default; the server checks ranges and names the limit in its answer."""
from __future__ import annotations

from netscope.client.server_info import OptionSchema

DEFAULT = "(method's default)"


def label(o: OptionSchema) -> str:
    return o.name.replace("_", " ")


def info(o: OptionSchema) -> str:
    """The control's help: the description, the default, the methods that take it."""
    text = o.description
    if o.default is not None and "default" not in text:
        text += f" (default {o.default})"
    if o.requires:
        text += f"; only with {o.requires}"
    return text


def uses(o: OptionSchema, method: str) -> bool:
    """Whether `method` takes the option (an option of no method in particular: every one, e.g. seed)."""
    return not o.methods or method in o.methods


def visible(o: OptionSchema, methods: list[str]) -> bool:
    """Shown when one of the chosen methods takes it; options every method takes are shown once one is chosen."""
    return bool(methods) and any(uses(o, m) for m in methods)


def value_of(o: OptionSchema, raw):
    """The control's value as the option's type; None when left at the default.
    ValueError naming the option when it is not of the option's type."""
    if raw is None or raw == "" or raw == DEFAULT:
        return None
    try:
        if o.type == "bool":
            return raw if isinstance(raw, bool) else str(raw).lower() == "true"
        if o.type == "int":
            f = float(raw)
            if f != int(f):
                raise ValueError
            return int(f)
        if o.type == "float":
            return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"option {o.name} takes {'an integer' if o.type == 'int' else 'a number'}; "
                         f"got {raw!r}") from None
    return str(raw)


def options_for(schema: list[OptionSchema], values: list, method: str) -> dict:
    """{name: value} of the options set in the form (values in schema order) that `method` takes."""
    chosen = {}
    for o, raw in zip(schema, values):
        v = value_of(o, raw)
        if v is not None and uses(o, method):
            chosen[o.name] = v
    return chosen


def controls(schema: list[OptionSchema]) -> list:
    """One Gradio component per option, hidden until a method that takes it is chosen."""
    import gradio as gr

    made = []
    for o in schema:
        kw = dict(label=label(o), info=info(o), visible=False, elem_id=f"opt-{o.name}")
        if o.type in ("int", "float"):  # a text box: a number box cannot be left empty (unset)
            made.append(gr.Textbox(value="", placeholder=f"{DEFAULT}: {o.type}", **kw))
        elif o.type == "bool":
            made.append(gr.Dropdown([DEFAULT, "true", "false"], value=DEFAULT, **kw))
        elif o.choices:
            made.append(gr.Dropdown([DEFAULT, *o.choices], value=DEFAULT, **kw))
        else:
            made.append(gr.Textbox(value="", placeholder=DEFAULT, **kw))
    return made
