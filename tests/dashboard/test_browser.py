"""The pages in a real headless Chromium, on a hub seeded through the real ingest path: the
charts drew points for the chosen range, the range switch and zoom re-read the right tier, and
nothing logs an error or reaches past loopback. Takes the README's screenshots on the way
(written to docs/img/ when UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.dashboard.cdp import CHROMIUM, chromium

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(),
                                reason="chromium not installed (tests/run installs it as root)")
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

# For every chart: points with a value, the x scale, and how many canvas pixels are not blank
# inside the plotting area (a line was really drawn, not just an empty frame).
DRAWN = """(() => (window.homelabCharts || []).map(u => {
  const c = u.ctx.canvas, b = u.bbox;
  const px = u.ctx.getImageData(b.left, b.top, b.width, b.height).data;
  let inked = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i] > 0) inked++;
  return {title: u.root.parentElement.parentElement.dataset.chart,
          points: u.data.slice(1).reduce((n, s) => n + s.filter(v => v != null).length, 0),
          min: u.scales.x.min, max: u.scales.x.max, inked, width: c.width};
}))()"""


def _check_drawn(charts, span: float, now: float) -> None:
    assert {c["title"] for c in charts} >= {"cpu", "memory", "disk", "load", "net", "diskio"}, charts
    for c in charts:
        assert c["points"] > 50, c
        assert c["inked"] > 200, c
        assert abs((c["max"] - c["min"]) - span) < 0.02 * span + 120, c
        assert abs(c["max"] - now) < 0.02 * span + 300, c


def _keep(shot: Path, name: str) -> None:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, IMG / name)


async def test_home_and_node_pages_in_chromium(fleet, tmp_path):
    async with chromium(tmp_path / "profile") as page:
        await page.goto(f"{fleet.url}/")
        names = await page.eval("[...document.querySelectorAll('table.nodes td:first-child a')].map(a => a.textContent)")
        assert names == ["nas01", "pi-garage", "workstation-with-a-rather-long-hostname"]
        assert await page.eval("document.body.innerText.includes('nginx.service')")
        shot = tmp_path / "home.png"
        assert len(await page.screenshot(shot)) > 20_000
        _keep(shot, "home.png")

        await page.goto(f"{fleet.url}/nodes/nas01?range=30d")
        await page.wait_js("document.getElementById('charts').dataset.loaded", what="charts drawn")
        _check_drawn(await page.eval(DRAWN), 30 * 86400, time.time())
        assert await page.eval("document.getElementById('tier').textContent") == "samples_1h"
        shot = tmp_path / "node.png"
        assert len(await page.screenshot(shot)) > 20_000
        _keep(shot, "node.png")

        # switch the range in place: the 7-day view reads the 1-minute tier
        before = await page.eval("document.getElementById('charts').dataset.loaded")
        await page.eval("document.querySelector('#ranges a[data-range=\"7d\"]').click()")
        await page.wait_js(f"document.getElementById('charts').dataset.loaded !== '{before}'", what="7d redraw")
        assert await page.eval("document.getElementById('tier').textContent") == "samples_1m"
        assert await page.eval("location.search") == "?range=7d"
        _check_drawn(await page.eval(DRAWN), 7 * 86400, time.time())

        # zoom by selection: drag across the last tenth of the CPU chart -> a finer tier
        before = await page.eval("document.getElementById('charts').dataset.loaded")
        await page.eval("(() => { const u = window.homelabCharts[0];"
                        " u.setSelect({left: u.bbox.width * 0.97 / devicePixelRatio, top: 0,"
                        " width: u.bbox.width * 0.029 / devicePixelRatio, height: 10}); })()")
        await page.wait_js(f"document.getElementById('charts').dataset.loaded !== '{before}'", what="zoom redraw")
        assert await page.eval("document.getElementById('tier').textContent") == "samples"
        zoomed = await page.eval(DRAWN)
        assert all(c["max"] - c["min"] < 6 * 3600 and c["points"] > 10 for c in zoomed), zoomed

        # the 1 h range from the plain link (what a browser without the script follows)
        await page.goto(f"{fleet.url}/nodes/pi-garage?range=1h")
        await page.wait_js("document.getElementById('charts').dataset.loaded", what="1h charts")
        _check_drawn(await page.eval(DRAWN), 3600, time.time())

        assert page.errors == []
        assert page.foreign_requests() == []
        assert any("/dashboard/static/uPlot.iife.min.js" in u for u in page.requests)
