// Node page charts: uPlot over /dashboard/api/nodes/NAME/series. The page is complete without
// this script (server-rendered summary, plain range links); this draws the history, switches
// ranges in place, zooms to a dragged selection (re-reading the finer tier) and refreshes.
"use strict";
(function () {
  const root = document.getElementById("charts");
  if (!root || typeof uPlot === "undefined") return;
  const api = root.dataset.api;
  const palette = ["#2f7ed8", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#5d6d7e", "#c0392b", "#27ae60"];
  const markColor = { alert: "rgba(220,40,40,0.75)" };
  let range = root.dataset.range, zoom = null, plots = [], timer = null;
  window.homelabCharts = plots;  // for the test suite: what was drawn

  function human(v, unit) {
    if (v == null) return "";
    if (unit === "B/s") {
      const u = ["B/s", "KB/s", "MB/s", "GB/s"]; let i = 0;
      while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
      return v.toFixed(v < 10 && i ? 1 : 0) + " " + u[i];
    }
    if (unit === "%") return v.toFixed(0) + "%";
    if (unit === "°C") return v.toFixed(0) + "°C";
    return v.toFixed(2);
  }

  function marksPlugin(marks) {
    return { hooks: { draw: [u => {
      const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      ctx.save(); ctx.lineWidth = 1 * devicePixelRatio;
      for (const m of marks) {
        if (m.ts < u.scales.x.min || m.ts > u.scales.x.max) continue;
        const x = Math.round(u.valToPos(m.ts, "x", true));
        ctx.strokeStyle = markColor[m.kind] || "rgba(90,90,160,0.45)";
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
      }
      ctx.restore();
    }] } };
  }

  function draw(data) {
    plots.forEach(p => p.destroy()); plots.length = 0;
    document.getElementById("tier").textContent = data.tier;
    document.getElementById("bucket").textContent = data.bucket;
    const byId = {};
    root.querySelectorAll(".chart").forEach(el => { byId[el.dataset.chart] = el; el.hidden = true; });
    for (const c of data.charts) {
      let el = byId[c.id];
      if (!el) {  // a chart the first render did not have (a new mount, a new sensor)
        el = document.createElement("div"); el.className = "chart"; el.dataset.chart = c.id;
        const h = document.createElement("h2"); h.textContent = c.title; el.appendChild(h);
        const p = document.createElement("div"); p.className = "plot"; el.appendChild(p);
        root.appendChild(el);
      }
      el.hidden = false;
      const target = el.querySelector(".plot"); target.textContent = "";
      const opts = {
        width: Math.max(320, target.clientWidth || 560), height: 180,
        scales: { x: { time: true, range: [data.start, data.end] } },
        series: [{}].concat(c.lines.map((l, i) => ({
          label: l.label, stroke: palette[i % palette.length], width: 1.5, spanGaps: false,
          value: (u, v) => human(v, c.unit),
        }))),
        axes: [{}, { size: 70, values: (u, vals) => vals.map(v => human(v, c.unit)) }],
        cursor: { sync: { key: "node" }, drag: { x: true, y: false, setScale: false } },
        hooks: { setSelect: [u => {
          if (u.select.width < 3) return;
          const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, width: 0 }, false);
          zoom = [Math.floor(a), Math.ceil(b)]; load();
        }] },
        plugins: [marksPlugin(data.marks || [])],
      };
      const u = new uPlot(opts, [data.ts].concat(c.lines.map(l => l.values)), target);
      u.over.addEventListener("dblclick", () => { zoom = null; load(); });
      plots.push(u);
    }
    root.dataset.loaded = String(Date.now());
  }

  async function load() {
    const q = zoom ? `from=${zoom[0]}&to=${zoom[1]}` : `range=${encodeURIComponent(range)}`;
    const r = await fetch(`${api}?${q}`, { credentials: "same-origin" });
    if (!r.ok) { root.dataset.error = `${r.status}`; return; }
    draw(await r.json());
  }

  document.querySelectorAll("#ranges a[data-range]").forEach(a => a.addEventListener("click", ev => {
    ev.preventDefault();
    range = a.dataset.range; zoom = null;
    document.querySelectorAll("#ranges a").forEach(x => { x.classList.toggle("current", x === a); x.removeAttribute("aria-current"); });
    a.setAttribute("aria-current", "true");
    history.replaceState(null, "", `?range=${encodeURIComponent(range)}`);
    load();
  }));

  function schedule() {
    clearInterval(timer);
    timer = setInterval(() => { if (!zoom && !document.hidden) load(); }, 60000);
  }
  load().then(schedule);
})();
