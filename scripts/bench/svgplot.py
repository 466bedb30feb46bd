"""Draws the bench's throughput-against-concurrency plot as a standalone SVG, by hand, so the
bench needs nothing beyond the Python standard library."""

from __future__ import annotations

import math
import statistics
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 80, 200, 50, 60
PUT_COLOUR, GET_COLOUR = "#1f77b4", "#ff7f0e"


def nice_ceiling(value: float) -> tuple[float, float]:
    """A round axis maximum at or above `value`, and its tick step."""
    if value <= 0:
        return 1.0, 0.2
    exponent = 10 ** math.floor(math.log10(value))
    for step_factor in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10):
        step = step_factor * exponent
        top = math.ceil(value / step) * step
        if top / step <= 8:
            return top, step
    return value, value / 5


def concurrency_plot(
    sweep: list[dict], reference: dict, targets: dict, marked_concurrency: int, title_date: str
) -> str:
    levels = [s["concurrency"] for s in sweep]
    put = [s["put"]["req_per_s"] for s in sweep]
    get = [s["get"]["req_per_s"] for s in sweep]
    pf = reference["prosody-filer"]
    go = reference["go-3.4"]
    refs = [pf["small_put_rps"], pf["small_get_rps"], go["small_put_rps"], go["small_get_rps"]]
    refs += [targets.get("small_put_rps", 0), targets.get("small_get_rps", 0)]
    y_max, y_step = nice_ceiling(max(put + get + refs) * 1.05)

    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    lo, hi = math.log2(min(levels)), math.log2(max(levels))
    span = (hi - lo) or 1.0

    def x(c: float) -> float:
        return LEFT + (math.log2(c) - lo) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / y_max * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">'
        f"hmac-file-server: 64 KiB PUT and GET, requests/s against concurrency</text>",
        f'<text x="{LEFT}" y="40" fill="#555">{escape(title_date)}, loopback, store on /dev/shm, '
        "server and wrk on the same 2 cores</text>",
    ]
    # Grid and y axis.
    v = 0.0
    while v <= y_max + 1e-9:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
        v += y_step
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#333"/>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#333"/>')
    for c in levels:
        out.append(f'<line x1="{x(c):.1f}" x2="{x(c):.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 5}" stroke="#333"/>')
        out.append(f'<text x="{x(c):.1f}" y="{TOP + plot_h + 20}" text-anchor="middle">{c}</text>')
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 14}" text-anchor="middle">concurrent connections (log scale)</text>'
    )
    out.append(
        f'<text transform="translate(22 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">requests/s</text>'
    )
    # The measured lines.
    for values, colour in ((put, PUT_COLOUR), (get, GET_COLOUR)):
        points = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in zip(levels, values))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
        for c, v in zip(levels, values):
            out.append(f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="4" fill="{colour}"/>')
            last = c == levels[-1]
            out.append(
                f'<text x="{x(c) + (-6 if last else 6):.1f}" y="{y(v) - 7:.1f}" fill="{colour}" font-size="11" '
                f'text-anchor="{"end" if last else "start"}">{v:,.0f}</text>'
            )
    # Reference figures from the issue, measured at one concurrency.
    if min(levels) <= marked_concurrency <= max(levels):
        cx = x(marked_concurrency)
        for value, colour, shape in (
            (pf["small_put_rps"], PUT_COLOUR, "square"),
            (pf["small_get_rps"], GET_COLOUR, "square"),
            (go["small_put_rps"], PUT_COLOUR, "diamond"),
            (go["small_get_rps"], GET_COLOUR, "diamond"),
        ):
            out.append(marker(cx, y(value), colour, shape))
        for value, colour in ((targets.get("small_put_rps"), PUT_COLOUR), (targets.get("small_get_rps"), GET_COLOUR)):
            if value:
                out.append(
                    f'<line x1="{cx - 28:.1f}" x2="{cx + 28:.1f}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                    f'stroke="{colour}" stroke-width="2" stroke-dasharray="5,3"/>'
                )
    # Legend.
    lx, ly = LEFT + plot_w + 20, TOP + 10
    entries = [
        ("line", PUT_COLOUR, "PUT (this server)"),
        ("line", GET_COLOUR, "GET (this server)"),
        ("square", "#333", f"prosody-filer, c={marked_concurrency}"),
        ("diamond", "#333", f"Go 3.4, c={marked_concurrency}"),
        ("dash", "#333", f"target, c={marked_concurrency}"),
    ]
    for i, (kind, colour, label) in enumerate(entries):
        yy = ly + i * 22
        if kind == "line":
            out.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{yy}" y2="{yy}" stroke="{colour}" stroke-width="2.5"/>')
        elif kind == "dash":
            out.append(
                f'<line x1="{lx}" x2="{lx + 22}" y1="{yy}" y2="{yy}" stroke="{colour}" '
                'stroke-width="2" stroke-dasharray="5,3"/>'
            )
        else:
            out.append(marker(lx + 11, yy, colour, kind))
        out.append(f'<text x="{lx + 30}" y="{yy + 4}">{escape(label)}</text>')
    note = ["markers and dashes:", "blue = PUT, orange = GET;", "figures from the issue,", "same kind of machine"]
    for i, text in enumerate(note):
        out.append(f'<text x="{lx}" y="{ly + 5 * 22 + 8 + i * 14}" fill="#555" font-size="11">{text}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def marker(cx: float, cy: float, colour: str, shape: str) -> str:
    if shape == "square":
        return (
            f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" fill="white" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
    return (
        f'<polygon points="{cx:.1f},{cy - 6:.1f} {cx + 6:.1f},{cy:.1f} {cx:.1f},{cy + 6:.1f} {cx - 6:.1f},{cy:.1f}" '
        f'fill="white" stroke="{colour}" stroke-width="2"/>'
    )


# The peer phase's ratios (issue 15): (label, which ratio list, figure, target median).
PEER_ROWS = (
    ("small PUT req/s ÷ prosody-filer", "ours_of_peer", "small_put_rps", 1.5),
    ("small GET req/s ÷ prosody-filer", "ours_of_peer", "small_get_rps", 1.2),
    ("1 GiB PUT MiB/s ÷ prosody-filer", "ours_of_peer", "large_put_mibs", 1.0),
    ("1 GiB GET MiB/s ÷ prosody-filer", "ours_of_peer", "large_get_mibs", 1.1),
    ("small GET req/s ÷ nginx", "ours_of_nginx", "small_get_rps", 0.9),
    ("1 GiB GET MiB/s ÷ nginx", "ours_of_nginx", "large_get_mibs", 1.0),
)


def ratio_plot(ratios: dict, title_date: str, store: str) -> str:
    """Each round's ratio (this server ÷ the peer, within the round) as a dot per figure, the
    median as a bar, the target as a dashed bar and 1.0 (level) as a line."""
    rows = [(label, ratios.get(side, {}).get(key) or [], target) for label, side, key, target in PEER_ROWS]
    rows = [r for r in rows if r[1]]
    left, right, top, row_h, bottom = 230, 150, 60, 40, 60
    width = 800
    height = top + row_h * len(rows) + bottom
    plot_w = width - left - right
    x_max = max([2.0] + [v * 1.05 for _, values, _ in rows for v in values])
    x_max, step = nice_ceiling(x_max)

    def x(v: float) -> float:
        return left + v / x_max * plot_w

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="24" font-size="15" font-weight="bold">'
        "hmac-file-server ÷ prosody-filer and nginx, each round</text>",
        f'<text x="{left}" y="40" fill="#555">{escape(title_date)}, same run, interleaved, '
        f"stores on {escape(store)}; above 1 = this server ahead</text>",
    ]
    bottom_y = top + row_h * len(rows)
    v = 0.0
    while v <= x_max + 1e-9:
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top}" y2="{bottom_y}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{x(v):.1f}" y="{bottom_y + 16}" text-anchor="middle">{v:g}</text>')
        v += step
    out.append(f'<line x1="{x(1):.1f}" x2="{x(1):.1f}" y1="{top - 6}" y2="{bottom_y}" stroke="#333" stroke-width="1.5"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{bottom_y + 32}" text-anchor="middle">ratio, this server ÷ the other</text>')
    for i, (label, values, target) in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        median = statistics.median(values)
        out.append(f'<text x="{left - 10}" y="{cy + 4:.1f}" text-anchor="end">{escape(label)}</text>')
        out.append(
            f'<line x1="{x(target):.1f}" x2="{x(target):.1f}" y1="{cy - 13:.1f}" y2="{cy + 13:.1f}" '
            'stroke="#d62728" stroke-width="2" stroke-dasharray="4,3"/>'
        )
        for value in values:
            out.append(f'<circle cx="{x(value):.1f}" cy="{cy:.1f}" r="4.5" fill="{PUT_COLOUR}" fill-opacity="0.45"/>')
        out.append(
            f'<line x1="{x(median):.1f}" x2="{x(median):.1f}" y1="{cy - 11:.1f}" y2="{cy + 11:.1f}" '
            f'stroke="{PUT_COLOUR}" stroke-width="3"/>'
        )
        met = median >= target and min(values) >= 1.0  # the rule: and no round below 1
        out.append(
            f'<text x="{left + plot_w + 10}" y="{cy + 4:.1f}" fill="{"#2ca02c" if met else "#d62728"}">'
            f"median {median:.2f} (≥ {target:g})</text>"
        )
    out.append(
        f'<text x="{left}" y="{height - 12}" fill="#555" font-size="11">dots: rounds; bar: median; red dashes: '
        "target (met: median at it and no round below 1)</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
