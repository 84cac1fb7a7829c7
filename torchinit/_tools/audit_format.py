"""An audit's result as text tables (the CLI's output) and as one self-contained HTML file (``--html``)."""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

REASONS = {
    "torch default": "at torch's default init U(+-1/sqrt(fan_in))",
    "too small": "too small",
    "too large": "too large",
}


NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
"""How `to_json` spells the numbers strict JSON has no token for (NaN is ``"NaN"``)."""


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE.get(value, "NaN")
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(result: dict[str, Any]) -> str:
    """``result`` as strict JSON (RFC 8259): an infinite or NaN number (an inf weight's std) becomes the string
    ``"Infinity"``, ``"-Infinity"`` or ``"NaN"``, which Python's ``float()`` and JavaScript's ``Number()``
    read back; Python's own ``Infinity``/``NaN`` tokens would make the output unreadable to strict parsers."""
    return json.dumps(_finite(result), indent=1, allow_nan=False)


def _num(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _fans(layer: dict[str, Any]) -> str:
    if layer["fan_in"] is None:
        return "-"
    chunks = f" x{layer['chunks']}" if layer["chunks"] > 1 else ""
    return f"{layer['fan_in']:g}, {layer['fan_out']:g}{chunks}"


def _band(result: dict[str, Any]) -> str:
    low, high = result["band"]
    return f"{low:g}x-{high:g}x"


def layer_rows(result: dict[str, Any]) -> list[list[str]]:
    """The weight-bearing layers' table, header first."""
    rows = [["layer", "type", "shape", "fans (in, out)", "std", "scheme std", "ratio", "flag"]]
    for layer in result["layers"]:
        tied = f" (tied: {', '.join(layer['tied_to'])})" if layer["tied_to"] else ""
        rows.append([
            layer["path"] + tied, layer["type"], "x".join(map(str, layer["shape"])), _fans(layer),
            _num(layer["std"]), _num(layer["scheme_std"]), _num(layer["ratio"], ".3f"), layer["flag"] or "",
        ])  # fmt: skip
    return rows


def flag_summary(result: dict[str, Any]) -> str:
    """``flagged 3 of 4 layers (...): 3 at torch's default init ..., 0 too small, 0 too large.``"""
    layers = result["layers"]
    counts = {reason: sum(layer["flag"] == reason for layer in layers) for reason in REASONS}
    unreferenced = sum(layer["ratio"] is None for layer in layers)
    tail = f"; {unreferenced} without a scheme std to compare with" if unreferenced else ""
    return (
        f"flagged {sum(counts.values())} of {len(layers)} layers (weight std outside {_band(result)} the scheme's): "
        + ", ".join(f"{n} {REASONS[reason]}" for reason, n in counts.items())
        + f"{tail}."
    )


def raw_rows(result: dict[str, Any]) -> list[list[str]]:
    """Raw parameters (no rule covers them), header first."""
    rows = [["parameter", "module type", "shape", "std"]]
    for p in result["raw_parameters"]:
        shape = "uninitialized (lazy)" if p["shape"] is None else "x".join(map(str, p["shape"])) or "()"
        rows.append([p["path"], p["type"], shape, _num(p["std"])])
    return rows


def activation_rows(result: dict[str, Any]) -> list[list[str]]:
    """Every recorded call: activation std and weight gradient std, current and under the scheme."""
    grads = {g["path"]: g for g in result.get("gradients", [])}
    compared = "compare" in result and result["compare"].startswith("a copy")
    head = ["module", "type", "call", "activation std"] + (["scheme"] if compared else [])
    head += ["weight grad std"] + (["scheme"] if compared else [])
    rows = [head]
    for act in result["activations"]:
        call = f"{act['call']}/{act['calls']}" if act["calls"] > 1 else ""
        row = [act["path"], act["type"], call, _num(act["std"])] + ([_num(act.get("scheme_std"))] if compared else [])
        grad = grads.get(act["path"]) if act["call"] == 1 else None
        row += [_num(grad["std"]) if grad else "-"]
        row += [_num(grad.get("scheme_std")) if grad else "-"] if compared else []
        rows.append(row)
    return rows


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def pass_header(result: dict[str, Any]) -> list[str]:
    """What the pass ran on, how reused modules are shown, the loss, what the scheme column is."""
    lines = [f"one forward pass in {result['mode']} mode on {'; '.join(result['inputs'])} (seed {result['seed']})"]
    reused = result["reused"]
    lines.append(
        f"{result['calls']} module calls, every call recorded"
        + (f"; {len(reused)} modules called more than once (call k/n): {', '.join(reused[:6])}" if reused else "")
        + ("..." if len(reused) > 6 else "")
    )
    lines.append(f"backward: loss = {result['loss']}" if result["loss"].startswith("out") else result["loss"])
    if "compare" in result:
        lines.append(f"scheme columns: {result['compare']}")
    return lines


def format_audit(result: dict[str, Any]) -> str:
    """The audit as fixed-width tables."""
    lines = [f"audit of {result['target']} ({result['model']}), compared with scheme {result['scheme']}", ""]
    lines.append(
        f"weight-bearing layers: weight std against what {result['scheme']} gives; flagged outside {_band(result)}"
    )
    lines += _table(layer_rows(result), right={4, 5, 6})
    lines.append(flag_summary(result))
    lines.append("")
    if result["raw_parameters"]:
        lines.append("raw parameters (no rule covers them; reinit leaves them as they are and warns):")
        lines += _table(raw_rows(result), right={3})
    else:
        lines.append("raw parameters (no rule covers them): none")
    if "activations" in result:
        lines += ["", *pass_header(result)]
        rows = activation_rows(result)
        lines += _table(rows, right=set(range(3, len(rows[0]))))
    return "\n".join(lines)


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font: 12px ui-monospace, monospace; }
th, td { padding: 2px 8px; border-bottom: 1px solid #e4e4e4; text-align: left; white-space: nowrap; }
td.n { text-align: right; } tr.flag td { background: #fdecea; } img { max-width: 100%; }
.note { color: #555; }
"""


def _html_table(rows: list[list[str]], right: set[int], flagged: list[bool] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = []
    for k, row in enumerate(rows[1:]):
        cls = ' class="flag"' if flagged and flagged[k] else ""
        cells = "".join(f"<td{' class=n' if i in right else ''}>{html.escape(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_report(result: dict[str, Any], figure: bytes | None, note: str = "") -> str:
    """One self-contained HTML page: the summary, the figure (a base64 PNG) and every table."""
    title = f"torchinit audit of {result['target']}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(result['model'])}, compared with scheme <b>{html.escape(result['scheme'])}</b>; seed "
        f"{result['seed']}. {html.escape(flag_summary(result))}</p>",
    ]
    if figure is not None:
        parts.append(f"<img alt='audit figure' src='data:image/png;base64,{base64.b64encode(figure).decode()}'>")
    elif note:
        parts.append(f"<p class=note>{html.escape(note)}</p>")
    parts.append("<h2>Weight-bearing layers</h2>")
    parts.append(_html_table(layer_rows(result), {4, 5, 6}, [bool(layer["flag"]) for layer in result["layers"]]))
    parts.append("<h2>Raw parameters (no rule covers them)</h2>")
    parts.append(_html_table(raw_rows(result), {3}) if result["raw_parameters"] else "<p>None.</p>")
    if "activations" in result:
        parts.append("<h2>Forward and backward pass</h2>")
        parts.append("".join(f"<p class=note>{html.escape(line)}</p>" for line in pass_header(result)))
        rows = activation_rows(result)
        parts.append(f"<details><summary>{len(rows) - 1} calls</summary>")
        parts.append(_html_table(rows, set(range(3, len(rows[0])))) + "</details>")
    parts.append("<p class=note>Made by <code>torchinit audit</code>.</p></body></html>")
    return "\n".join(parts)
