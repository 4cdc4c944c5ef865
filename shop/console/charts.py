"""Sales over time as an inline SVG drawn here: no script, no external library, nothing for the CSP to allow.

Bars are the tickets sold each day; the line is the running total, on its own scale.
"""
from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 36, 44, 12, 28


def sales_chart(points, title="Tickets sold per day"):
    """``points``: ``[(date, tickets sold that day), …]`` oldest first → an SVG element (Markup)."""
    if not points:
        points = []
    days = len(points) or 1
    per_day = max([n for _, n in points] + [1])
    running, total = [], 0
    for _, n in points:
        total += n
        running.append(total)
    top_total = max(total, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / days
    bar_w = max(1.0, step * 0.7)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}: '
             f'{total} tickets in {len(points)} days" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" class="axis"/>']
    line = []
    for i, ((day, n), so_far) in enumerate(zip(points, running, strict=True)):
        x = LEFT + i * step
        h = plot_h * n / per_day
        if n:
            parts.append(f'<rect x="{x + (step - bar_w) / 2:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" class="bar"><title>{day:%d %b %Y}: {n} sold</title></rect>')
        line.append(f"{x + step / 2:.1f},{TOP + plot_h - plot_h * so_far / top_total:.1f}")
    if line:
        parts.append(f'<polyline points="{" ".join(line)}" class="total"/>')
    parts += [f'<text x="{LEFT - 4}" y="{TOP + 10}" class="label end">{per_day}</text>',
              f'<text x="{LEFT - 4}" y="{TOP + plot_h}" class="label end">0</text>',
              f'<text x="{LEFT + plot_w + 4}" y="{TOP + 10}" class="label total-label">{total}</text>']
    if points:
        parts += [f'<text x="{LEFT}" y="{HEIGHT - 8}" class="label">{points[0][0]:%d %b}</text>',
                  f'<text x="{LEFT + plot_w}" y="{HEIGHT - 8}" class="label end">{points[-1][0]:%d %b}</text>']
    parts.append("</svg>")
    return Markup("".join(parts))
