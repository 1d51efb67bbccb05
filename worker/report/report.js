// The report page: counts, failures by reason, a contact sheet and a viewer per item.
// Data comes from the JSON block the generator wrote; files through the URLs it holds
// (relative to this page for a local folder, signed for a bucket). Problems the page meets
// (an HLS error, a tile that fails) are kept in window.mwReport.errors for whoever looks.
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const state = { data: DATA, errors: [], players: {}, osd: null, tiles: null, open: openViewer };
  window.mwReport = state;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }
  // Help texts mark commands and names with backticks, as the docs do.
  const withCode = (text) => text.split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part));
  const abs = (url) => new URL(url, document.baseURI).href;
  const byId = (id) => DATA.items.find((item) => item.id === id);
  const local = DATA.signed_until === null;
  const FIRST_FAILURES = 20;

  function header() {
    const run = DATA.run;
    const took = run.seconds === null ? "" : ` in ${run.seconds.toFixed(1)} s`;
    const started = run.started ? `started ${run.started}, ` : "";
    document.getElementById("run").textContent =
      `${run.command}: ${DATA.items.length} items, ${started}finished ${run.finished}${took}` +
      ` (page made ${DATA.generated})`;
    const access = document.getElementById("access");
    if (!local) {
      access.textContent = `Files are read through signed URLs valid until ${DATA.signed_until}` +
        " (at most 4 hours after the page was made); make the page again to look later.";
    } else if (location.protocol === "file:") {
      access.textContent = "Files are read from the folder beside this page. Opened from disk," +
        " thumbnails show but browsers refuse scripts reading files, so for playback, waveforms" +
        ` and Deep Zoom serve the folder: ${DATA.serve_hint}`;
    } else {
      access.textContent = "Files are read from the folder beside this page.";
    }
  }

  function countTable(title, counts) {
    const rows = Object.entries(counts).map(([name, n]) =>
      el("tr", {}, el("td", { class: `status-${name}` }, name), el("td", { class: "n" }, String(n))));
    return el("table", { "data-count": title },
      el("thead", {}, el("tr", {}, el("th", {}, title), el("th", {}, "items"))),
      el("tbody", {}, ...rows));
  }

  function counts() {
    const box = document.getElementById("counts");
    for (const field of ["type", "status", "reason"]) {
      if (Object.keys(DATA.counts[field]).length) box.append(countTable(field, DATA.counts[field]));
    }
  }

  function failures() {
    const box = document.getElementById("failures");
    const groups = {};
    for (const item of DATA.items) {
      if (item.reason) (groups[item.reason] ||= []).push(item);
    }
    if (!Object.keys(groups).length) return;
    box.append(el("h2", {}, "Failures by reason"));
    for (const [reason, items] of Object.entries(groups)) {
      const help = DATA.reasons[reason];
      const line = (item) => el("li", {},
        el("a", { href: `#${item.id}`, "data-open": item.id }, item.key), `: ${item.message}`);
      // A large batch may fail thousands of times for one reason: the first few show at once.
      const list = el("ul", {}, ...items.slice(0, FIRST_FAILURES).map(line));
      if (items.length > FIRST_FAILURES) {
        list.append(el("details", {}, el("summary", {}, `${items.length - FIRST_FAILURES} more`),
          el("ul", {}, ...items.slice(FIRST_FAILURES).map(line))));
      }
      box.append(el("div", { class: "reason", "data-reason": reason },
        el("h3", {}, `${reason} (${items.length})`),
        el("p", {}, ...withCode(help.meaning)),
        el("p", { class: "fix" }, "What to do: ", ...withCode(help.fix)),
        list));
    }
  }

  function card(item) {
    const thumb = item.thumb
      ? el("img", { loading: "lazy", src: item.thumb, alt: item.key })
      : el("span", { class: "noimg" }, item.reason || item.status);
    return el("button", {
      class: "card", type: "button", id: item.id, "data-open": item.id,
      "data-status": item.status, "data-type": item.type,
    },
    el("div", { class: "thumb" }, thumb),
    el("div", { class: "key" }, item.key),
    el("div", { class: "meta" }, item.type, " · ",
      el("span", { class: `status-${item.status}` }, item.reason || item.status)));
  }

  function sheet() {
    const box = document.getElementById("sheet");
    for (const item of DATA.items) box.append(card(item));
    for (const field of ["status", "type"]) {
      const select = document.getElementById(`filter-${field}`);
      for (const name of Object.keys(DATA.counts[field])) select.append(el("option", {}, name));
      select.addEventListener("change", filter);
    }
    filter();
  }

  function filter() {
    const status = document.getElementById("filter-status").value;
    const type = document.getElementById("filter-type").value;
    let shown = 0;
    for (const node of document.querySelectorAll("#sheet .card")) {
      const keep = (!status || node.dataset.status === status) &&
        (!type || node.dataset.type === type);
      node.hidden = !keep;
      shown += keep ? 1 : 0;
    }
    document.getElementById("shown").textContent = `${shown} of ${DATA.items.length} shown`;
  }

  function openViewer(id) {
    const item = byId(id);
    const dialog = document.getElementById("viewer");
    closeViewer();
    state.errors = [];
    document.getElementById("viewer-title").textContent = item.key;
    const reason = item.reason ? ` (${item.reason}) ${item.message}` : "";
    document.getElementById("viewer-status").textContent = `${item.type} · ${item.status}${reason}`;
    document.getElementById("viewer-payload").textContent =
      JSON.stringify(item.payload ?? item.problems, null, 2);
    const body = document.getElementById("viewer-body");
    if (item.video) videoViewer(item, body);
    else if (item.slide) slideViewer(item, body);
    else if (item.image) body.append(el("img", { src: item.image.src, style: "max-width:100%" }));
    if (!dialog.open) dialog.showModal();
  }

  function closeViewer() {
    for (const player of Object.values(state.players)) if (player.hls) player.hls.destroy();
    state.players = {};
    if (state.osd) state.osd.destroy();
    state.osd = null;
    document.getElementById("viewer-body").replaceChildren();
  }

  function videoViewer(item, body) {
    const row = el("div", { class: "qualities" });
    for (const quality of ["high", "low"]) {
      const video = el("video", { controls: "", playsinline: "", "data-quality": quality });
      video.muted = true;
      row.append(el("figure", {}, video, el("figcaption", {}, `${quality} quality (HLS)`)));
      attachHls(video, item.video.hls[quality], `${item.id}:${quality}`);
    }
    body.append(row);
    if (item.video.peaks) body.append(waveform(item.video.peaks));
    else body.append(el("p", { class: "note" }, "no audio track, so no waveform"));
    body.append(scrubber(item.video));
  }

  function attachHls(video, playlist, label) {
    // Segment lines become absolute, since the playlist itself is served from a blob: URL.
    const text = playlist.split("\n")
      .map((line) => (line.trim() && !line.startsWith("#") ? abs(line.trim()) : line)).join("\n");
    const url = URL.createObjectURL(new Blob([text], { type: "application/vnd.apple.mpegurl" }));
    const player = { video, hls: null };
    state.players[label] = player;
    video.addEventListener("error", () =>
      state.errors.push({ label, media_error: video.error ? video.error.code : null }));
    if (window.Hls && window.Hls.isSupported()) {
      player.hls = new window.Hls();
      player.hls.on(window.Hls.Events.ERROR, (_event, data) =>
        state.errors.push({ label, type: data.type, details: data.details, fatal: data.fatal }));
      player.hls.loadSource(url);
      player.hls.attachMedia(video);
    } else {
      video.src = url;
    }
  }

  function scrubber(video) {
    const frames = video.sections;
    const image = el("img", { alt: "section" });
    const caption = el("span", {});
    const link = el("a", { target: "_blank", rel: "noopener" }, "full quality");
    const range = el("input", { type: "range", min: 0, max: frames.length - 1, value: 0 });
    const show = () => {
      const at = frames[Number(range.value)];
      image.src = at.low;
      link.href = at.high;
      caption.textContent = `frame ${at.frame} (${(at.frame / video.fps).toFixed(2)} s) `;
    };
    range.addEventListener("input", show);
    show();
    return el("div", { class: "scrub" }, el("h3", {}, "sections"), image, range, caption, link);
  }

  function waveform(url) {
    const canvas = el("canvas", { class: "waveform", width: 1000, height: 80 });
    drawPeaks(canvas, url).catch((error) =>
      state.errors.push({ label: "waveform", error: String(error) }));
    return el("div", {}, el("h3", {}, "audio peaks"), canvas);
  }

  async function peakBytes(url) {
    const response = await fetch(abs(url));
    if (!response.ok) throw new Error(`audio peaks: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    // A bucket serves them with Content-Encoding: gzip and the browser inflates them; a
    // local folder serves the gzip bytes as they are.
    if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async function drawPeaks(canvas, url) {
    const peaks = await peakBytes(url);
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = "#0969da";
    const per = Math.max(1, peaks.length / width);
    for (let x = 0; x < width && x * per < peaks.length; x++) {
      let amp = 0;
      for (let i = Math.floor(x * per); i < Math.min(peaks.length, (x + 1) * per); i++) {
        amp = Math.max(amp, Math.abs(peaks[i] - 128));
      }
      const bar = Math.max(1, (amp / 128) * height);
      ctx.fillRect(x, (height - bar) / 2, 1, bar);
    }
    canvas.dataset.samples = String(peaks.length);
  }

  function slideViewer(item, body) {
    const slide = item.slide;
    const box = el("div", { id: "osd" });
    body.append(box);
    const tiles = { loaded: 0, failed: 0, max_level_loaded: -1, opened: null };
    state.tiles = tiles;
    const viewer = window.OpenSeadragon({
      element: box, tileSources: slide.tiles ? signedSource(slide) : abs(slide.dzi),
      showNavigationControl: false, drawer: "canvas", maxZoomPixelRatio: 2,
    });
    viewer.addHandler("open", () => {
      const size = viewer.world.getItemAt(0).source.dimensions;
      tiles.opened = { width: size.x, height: size.y };
    });
    viewer.addHandler("open-failed", (event) =>
      state.errors.push({ label: "deep zoom", error: event.message }));
    viewer.addHandler("tile-loaded", (event) => {
      tiles.loaded++;
      tiles.max_level_loaded = Math.max(tiles.max_level_loaded, event.tile.level);
    });
    viewer.addHandler("tile-load-failed", (event) => {
      tiles.failed++;
      state.errors.push({ label: "tile", error: event.message, level: event.tile.level });
    });
    state.osd = viewer;
    if (slide.tiles && slide.max_level < slide.levels - 1) {
      body.append(el("p", { class: "note" }, `Zoom stops at level ${slide.max_level} of ` +
        `${slide.levels - 1}: deeper tiles would need more signed URLs than a page should hold.`));
    }
  }

  function signedSource(slide) {
    // Sized to the deepest signed level, whose tiles then line up with the real pyramid's.
    const shrink = 2 ** (slide.levels - 1 - slide.max_level);
    return {
      width: Math.ceil(slide.width / shrink), height: Math.ceil(slide.height / shrink),
      tileSize: 254, tileOverlap: 1, minLevel: 0, maxLevel: slide.max_level,
      getTileUrl: (level, x, y) => slide.tiles[`${level}/${x}_${y}`],
    };
  }

  header();
  counts();
  failures();
  sheet();
  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-open]");
    if (!target) return;
    event.preventDefault();
    openViewer(target.dataset.open);
  });
  document.getElementById("viewer").addEventListener("close", closeViewer);
})();
