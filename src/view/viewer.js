// kiln view: draws the model kiln wrote into #kiln-model. The layout (layers and x of every
// scope's items) comes from kiln; this script only stacks the unfolded scopes' layouts with
// the sizes their items have in the current fold state, draws SVG, and handles folding,
// selection, search, pan and zoom. Opened as FILE.html#selftest it also drives itself (see
// selfTest) and writes what it saw into <pre id="kiln-selftest"> for the tests.
(function () {
  'use strict';
  const errors = [];
  const violations = [];
  window.addEventListener('error', (e) => errors.push(String(e.message)));
  document.addEventListener('securitypolicyviolation', (e) =>
    violations.push(e.violatedDirective + ' ' + e.blockedURI));
  const consoleError = console.error;
  console.error = function (...args) {
    errors.push(args.map(String).join(' '));
    consoleError.apply(console, args);
  };

  const M = JSON.parse(document.getElementById('kiln-model').textContent);
  const SVG = 'http://www.w3.org/2000/svg';
  const folded = M.scopes.map((s) => s.folded);
  const svg = document.getElementById('canvas');
  const viewport = document.getElementById('viewport');
  const details = document.getElementById('details');
  const view = { x: 20, y: 20, k: 1 };
  let selected = null;
  let nodeBox = [];
  let scopeBox = [];
  let origins = [];
  let itemAt = new Map();
  // Per scope: "from,to" item pair -> the x of its lane in each layer it crosses.
  const routes = M.scopes.map((sc) => new Map(sc.routes.map(([a, b, xs]) => [a + ',' + b, xs])));

  function el(tag, attrs, parent) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // The size and item positions of unfolded scope s: layers stacked by their tallest item,
  // each item at kiln's x, pushed right only where a grown neighbour would overlap it.
  function compose(s, cache) {
    if (cache[s]) return cache[s];
    const items = M.scopes[s].items;
    const sizes = items.map(([kind, id]) => {
      if (kind === 0) return [M.nodes[id].w, M.nodes[id].h];
      if (folded[id]) return [M.scopes[id].w, M.scopes[id].h];
      const c = compose(id, cache);
      return [c.w + 2 * M.scopePad, c.h + M.scopeHeader + 2 * M.scopePad];
    });
    const layers = [];
    items.forEach(([, , layer], i) => (layers[layer] = layers[layer] || []).push(i));
    const pos = new Array(items.length);
    const tops = [];
    const heights = [];
    let top = 0;
    let left = Infinity;
    let right = -Infinity;
    for (let l = 0; l < layers.length; l++) {
      const row = layers[l] || [];
      row.sort((a, b) => items[a][3] - items[b][3]);
      const height = row.length ? Math.max(...row.map((i) => sizes[i][1])) : 0;
      tops[l] = top;
      heights[l] = height;
      let prevRight = -Infinity;
      for (const i of row) {
        const x = Math.max(items[i][3] - sizes[i][0] / 2, prevRight + M.gapX);
        pos[i] = { x, y: top, w: sizes[i][0], h: sizes[i][1] };
        prevRight = x + sizes[i][0];
        left = Math.min(left, x);
        right = Math.max(right, prevRight);
      }
      top += height + M.gapY;
    }
    if (!items.length) left = right = 0;
    for (const p of pos) p.x -= left;
    return (cache[s] = { w: right - left, h: Math.max(0, top - M.gapY), pos, tops, heights, left });
  }

  // The box that shows node v now: its own, its host's, or its outermost folded scope's.
  function shownBy(v) {
    const host = M.nodes[v].host;
    if (host !== null) v = host;
    let shown = null;
    for (let s = M.nodes[v].scope; s !== null; s = M.scopes[s].parent) {
      if (folded[s]) shown = s;
    }
    return shown === null ? { node: v } : { scope: shown };
  }

  function heatFill(heat) {
    return 'hsl(8, 85%, ' + (97 - 34 * heat).toFixed(1) + '%)';
  }

  const kindFill = { input: '#d5e8d4', var: '#dae8fc', const: '#eeeeee', fused: '#ffe6cc',
    update: '#f8cecc', op: '#ffffff' };

  function drawNode(v, p, layer) {
    const n = M.nodes[v];
    const cls = 'node' + (n.output ? ' output' : '') + (v === selected ? ' selected' : '');
    const g = el('g', { class: cls, 'data-node': n.name, transform: `translate(${p.x},${p.y})` }, layer);
    const fill = n.heat !== undefined ? heatFill(n.heat) : M.totalMs !== null ? '#ffffff' : kindFill[n.kind];
    el('rect', { width: p.w, height: p.h, fill }, g);
    el('title', {}, g).textContent = n.name;
    const text = el('text', { x: 8, y: 0 }, g);
    let y = 4;
    n.lines.forEach((line, i) => {
      y += 14;
      const t = el('tspan', { x: 8, y: y - 3, class: i === 0 ? 'op' : 'dim' }, text);
      t.textContent = line;
    });
    n.plines.forEach((line, i) => {
      y += 12;
      const t = el('tspan', { x: 8, y: y - 3, class: 'param', 'data-node': M.nodes[n.params[i]].name }, text);
      t.textContent = line;
    });
    g.addEventListener('click', (e) => { e.stopPropagation(); select(v); });
  }

  function drawFoldedScope(s, p, layer) {
    const sc = M.scopes[s];
    const g = el('g', { class: 'scope folded', 'data-scope': sc.path, transform: `translate(${p.x},${p.y})` }, layer);
    el('rect', { width: p.w, height: p.h, fill: sc.heat !== undefined ? heatFill(sc.heat) : '' }, g);
    el('title', {}, g).textContent = sc.path + ' (click to unfold)';
    const text = el('text', {}, g);
    const lines = ['⊞ ' + sc.label, sc.total + ' nodes'];
    if (sc.share !== undefined) lines.push((100 * sc.share).toFixed(1) + '% of time');
    lines.forEach((line, i) => {
      const t = el('tspan', { x: 8, y: 15 + 14 * i, class: i === 0 ? 'op' : 'dim' }, text);
      t.textContent = line;
    });
    g.addEventListener('click', (e) => { e.stopPropagation(); toggle(s); });
  }

  // Draws unfolded scope s's items with their top-left corner at (ox, oy).
  function place(s, ox, oy, cache, layers) {
    const c = compose(s, cache);
    origins[s] = { ox, oy, c };
    M.scopes[s].items.forEach(([kind, id], i) => {
      itemAt.set((kind === 0 ? 'n' : 's') + id, { s, i });
      const p = { ...c.pos[i], x: c.pos[i].x + ox, y: c.pos[i].y + oy };
      if (kind === 0) {
        nodeBox[id] = p;
        drawNode(id, p, layers.nodes);
      } else if (folded[id]) {
        scopeBox[id] = p;
        drawFoldedScope(id, p, layers.nodes);
      } else {
        scopeBox[id] = p;
        const sc = M.scopes[id];
        const g = el('g', { class: 'scope open', 'data-scope': sc.path, transform: `translate(${p.x},${p.y})` }, layers.frames);
        el('rect', { width: p.w, height: p.h }, g);
        const bar = el('rect', { class: 'bar', width: p.w, height: M.scopeHeader }, g);
        el('title', {}, bar).textContent = sc.path + ' (click to fold)';
        const t = el('text', { x: 8, y: 14 }, g);
        t.textContent = '⊟ ' + sc.label;
        bar.addEventListener('click', (e) => { e.stopPropagation(); toggle(id); });
        place(id, p.x + M.scopePad, p.y + M.scopeHeader + M.scopePad, cache, layers);
      }
    });
    return c;
  }

  function render() {
    viewport.replaceChildren();
    nodeBox = [];
    scopeBox = [];
    origins = [];
    itemAt = new Map();
    const layers = { frames: el('g', {}, viewport), edges: el('g', {}, viewport), nodes: el('g', {}, viewport) };
    const root = place(0, 0, 0, [], layers);
    drawEdges(layers.edges);
    applyView();
    return root;
  }

  function boxOf(shown) {
    return shown.node !== undefined ? nodeBox[shown.node] : scopeBox[shown.scope];
  }

  function drawEdges(layer) {
    const seen = new Set();
    M.nodes.forEach((n, v) => {
      if (n.host !== null) return;
      const to = shownBy(v);
      for (const u of n.in) {
        if (M.nodes[u].host !== null) continue;
        const from = shownBy(u);
        const key = JSON.stringify([from, to, u]);
        if ((from.node === to.node && from.scope === to.scope) || seen.has(key)) continue;
        seen.add(key);
        const a = boxOf(from);
        const b = boxOf(to);
        if (!a || !b) continue;
        const x1 = a.x + a.w / 2, y1 = a.y + a.h, x2 = b.x + b.w / 2, y2 = b.y;
        // A long edge runs down its lane: straight through each layer it crosses.
        const points = [[x1, y1]].concat(lane(from, to), [[x2, y2 - 2]]);
        let d = `M${x1},${y1}`;
        for (let k = 1; k < points.length; k++) {
          const [px, py] = points[k - 1];
          const [qx, qy] = points[k];
          if (k % 2 === 0 && k < points.length - 1) { d += ` L${qx},${qy}`; continue; }
          const bend = Math.max(12, Math.abs(qy - py) / 2);
          d += ` C${px},${py + bend} ${qx},${qy - bend} ${qx},${qy}`;
        }
        const g = el('g', { class: 'edge' }, layer);
        el('path', { d, 'marker-end': 'url(#arrow)' }, g);
        const [lx, ly] = points.length > 2 ? points[1] : [(x1 + x2) / 2, (y1 + y2) / 2];
        const label = el('text', { x: lx + 4, y: ly + (points.length > 2 ? -4 : 3) }, g);
        label.textContent = M.nodes[u].dims;
      }
    });
  }

  // The lane points of a long edge: entering and leaving each layer it crosses in the
  // innermost scope holding both ends; none when those items are in adjacent layers.
  // The items that hold a box, from its own up to the root's item that holds it.
  function holders(shown) {
    const chain = [];
    let loc = itemAt.get(shown.node !== undefined ? 'n' + shown.node : 's' + shown.scope);
    while (loc) {
      chain.push(loc);
      loc = loc.s === 0 ? undefined : itemAt.get('s' + loc.s);
    }
    return chain;
  }

  function lane(from, to) {
    // The edge's lane is in the innermost scope holding both ends, between the items there.
    const up = holders(to);
    let a, b;
    for (const x of holders(from)) {
      b = up.find((y) => y.s === x.s);
      if (b) { a = x; break; }
    }
    if (!a || a.i === b.i) return [];
    let xs = routes[a.s].get(a.i + ',' + b.i);
    let reversed = false;
    if (!xs) { xs = routes[a.s].get(b.i + ',' + a.i); reversed = true; }
    if (!xs) return [];
    const { ox, oy, c } = origins[a.s];
    const items = M.scopes[a.s].items;
    const first = Math.min(items[a.i][2], items[b.i][2]) + 1;
    const points = [];
    xs.forEach((x, k) => {
      const l = first + k;
      points.push([ox + x - c.left, oy + c.tops[l]], [ox + x - c.left, oy + c.tops[l] + c.heights[l]]);
    });
    return reversed ? points.reverse() : points;
  }

  function applyView() {
    viewport.setAttribute('transform', `translate(${view.x},${view.y}) scale(${view.k})`);
  }

  function fit() {
    const box = viewport.getBBox();
    const w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    if (!box.width || !box.height) return;
    // The whole graph when that stays readable; else its top at a readable zoom.
    view.k = Math.max(0.45, Math.min(1.2, w / (box.width + 40), h / (box.height + 40)));
    view.x = Math.max(20, (w - box.width * view.k) / 2) - box.x * view.k;
    view.y = 20 - box.y * view.k;
    applyView();
  }

  function centreOn(p) {
    const w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    view.k = Math.max(view.k, 0.8);
    view.x = w / 2 - (p.x + p.w / 2) * view.k;
    view.y = h / 2 - (p.y + p.h / 2) * view.k;
    applyView();
  }

  function toggle(s) {
    folded[s] = !folded[s];
    render();
  }

  // Unfolds every scope around node v (or its host) and centres on it.
  function reveal(v) {
    const host = M.nodes[v].host !== null ? M.nodes[v].host : v;
    for (let s = M.nodes[host].scope; s !== null; s = M.scopes[s].parent) folded[s] = false;
    selected = v;
    render();
    if (nodeBox[host]) centreOn(nodeBox[host]);
    showDetails(v);
  }

  function select(v) {
    selected = v;
    for (const e of viewport.querySelectorAll('.node.selected')) e.classList.remove('selected');
    const host = M.nodes[v].host !== null ? M.nodes[v].host : v;
    const e = viewport.querySelector(`.node[data-node="${CSS.escape(M.nodes[host].name)}"]`);
    if (e) e.classList.add('selected');
    showDetails(v);
  }

  function h(tag, text, parent, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }

  function nodeLink(v, parent) {
    const a = h('a', '%' + M.nodes[v].name, parent);
    a.addEventListener('click', () => reveal(v));
    return a;
  }

  const byName = new Map(M.nodes.map((n, v) => [n.name, v]));

  // Text with %name references made into links: to the node here, or to what it was before
  // optimisation.
  function linkedText(text, parent) {
    const re = /%([A-Za-z0-9_.\-/]+)/g;
    let last = 0;
    for (let m; (m = re.exec(text));) {
      parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      const name = m[1];
      if (byName.has(name)) nodeLink(byName.get(name), parent);
      else if (M.before[name]) {
        const a = h('a', '%' + name, parent);
        a.title = 'before optimisation';
        a.addEventListener('click', () => showBefore(name));
      } else parent.appendChild(document.createTextNode('%' + name));
      last = m.index + m[0].length;
    }
    parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function showBefore(name) {
    const b = M.before[name];
    details.replaceChildren();
    h('h2', '%' + name, details);
    h('div', 'before optimisation: ' + b.op + ' ' + b.type, details, 'muted');
    if (b.attrs.length) {
      h('h3', 'attributes', details);
      const ul = h('ul', undefined, details);
      for (const a of b.attrs) h('li', a, ul);
    }
  }

  // A fused node's epilogue with `main` and `$k` spelled out as its main op and operands.
  function expandedExpr(n) {
    return n.expr.replace(/\$(\d+)/g, (m, k) => {
      const u = n.in[Number(k)];
      return u === undefined ? m : '%' + M.nodes[u].name;
    }).replace(/\bmain\b/g, n.op.replace(/^fused_/, '') + '(' +
      n.in.slice(0, 2).map((u) => '%' + M.nodes[u].name).join(', ') + ')');
  }

  function showDetails(v) {
    const n = M.nodes[v];
    details.replaceChildren();
    h('h2', '%' + n.name, details);
    h('div', n.op + ' → ' + n.type + (n.output ? '  (graph output)' : ''), details);
    if (n.flops !== null) {
      h('div', 'FLOPs: ' + n.flops.toLocaleString('en-US') +
        (n.flopsPerUnknown ? ' (for 1 in each ? dim)' : ''), details, 'muted');
    }
    if (n.ms !== undefined) {
      h('h3', 'measured time', details);
      h('div', n.ms.toFixed(4) + ' ms per run, ' + (100 * n.share).toFixed(2) + '% of ' +
        M.totalMs.toFixed(3) + ' ms', details);
      h('div', 'kernel: ' + n.kernel, details, 'muted');
    }
    if (n.attrs.length) {
      h('h3', 'attributes', details);
      const ul = h('ul', undefined, details);
      for (const a of n.attrs) h('li', a, ul);
    }
    if (n.expr !== undefined) {
      h('h3', 'fused epilogue', details);
      const pre = h('pre', undefined, details);
      linkedText(expandedExpr(n), pre);
    }
    const list = (title, ids) => {
      if (!ids.length) return;
      h('h3', title, details);
      const ul = h('ul', undefined, details);
      for (const u of ids) {
        const li = h('li', undefined, ul);
        nodeLink(u, li);
        li.appendChild(document.createTextNode(' ' + M.nodes[u].type));
      }
    };
    list('inputs', n.in);
    list('consumers', n.out);
    if (n.host !== null) list('drawn inside', [n.host]);
    if (n.origin.length) {
      h('h3', 'came from (rewrites)', details);
      const ul = h('ul', undefined, details);
      for (const r of n.origin) {
        const li = h('li', '[' + M.rewrites[r].pass + '] ', ul);
        linkedText(M.rewrites[r].message, li);
      }
    }
    let path = [];
    for (let s = n.scope; s !== null && M.scopes[s].path; s = M.scopes[s].parent) path.unshift(M.scopes[s].label);
    if (path.length) h('div', 'scope: ' + path.join(' / '), details, 'muted');
  }

  // Search by name or op; Enter steps through the matches.
  const search = document.getElementById('search');
  const matchCount = document.getElementById('matches');
  let matches = [];
  let matchAt = -1;
  function runSearch(step) {
    const q = search.value.trim().toLowerCase();
    if (!q) { matches = []; matchCount.textContent = ''; return null; }
    const fresh = matches.query !== q;
    if (fresh) {
      matches = [];
      M.nodes.forEach((n, v) => {
        if (n.name.toLowerCase().includes(q) || n.op.toLowerCase().includes(q)) matches.push(v);
      });
      matches.query = q;
      matchAt = -1;
    }
    if (!matches.length) { matchCount.textContent = 'no match'; return null; }
    if (step || fresh) matchAt = (matchAt + 1) % matches.length;
    matchCount.textContent = (matchAt + 1) + ' of ' + matches.length;
    reveal(matches[matchAt]);
    return matches[matchAt];
  }
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') runSearch(true); });

  function foldAll(value) {
    for (let s = 1; s < folded.length; s++) folded[s] = value;
    render();
    fit();
  }
  document.getElementById('fold-all').addEventListener('click', () => foldAll(true));
  document.getElementById('unfold-all').addEventListener('click', () => foldAll(false));
  document.getElementById('fit').addEventListener('click', fit);

  // Pan by dragging, zoom with the wheel around the pointer.
  let drag = null;
  svg.addEventListener('mousedown', (e) => { drag = { x: e.clientX - view.x, y: e.clientY - view.y }; svg.classList.add('panning'); });
  window.addEventListener('mousemove', (e) => { if (drag) { view.x = e.clientX - drag.x; view.y = e.clientY - drag.y; applyView(); } });
  window.addEventListener('mouseup', () => { drag = null; svg.classList.remove('panning'); });
  svg.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    const px = e.clientX - r.left, py = e.clientY - r.top;
    const k = Math.min(4, Math.max(0.02, view.k * Math.exp(-e.deltaY * 0.0015)));
    view.x = px - (px - view.x) * k / view.k;
    view.y = py - (py - view.y) * k / view.k;
    view.k = k;
    applyView();
  }, { passive: false });

  function shownNodes() {
    return [...viewport.querySelectorAll('[data-node]')].map((e) => e.getAttribute('data-node'));
  }

  // Drives the page as a user would (hash parameters: click=NODE, fold=SCOPE, search=TEXT,
  // probe=1 to try a network request and a console error, proving the detectors work) and
  // writes the results as JSON into <pre id="kiln-selftest">.
  function selfTest() {
    const params = new URLSearchParams(location.hash.slice('#selftest'.length).replace(/^&/, ''));
    const report = { nodes: M.nodes.length, scopes: M.scopes.length };
    const click = params.get('click');
    if (click !== null) {
      const e = viewport.querySelector(`.node[data-node="${CSS.escape(click)}"]`);
      report.click = { found: !!e };
      if (e) {
        e.dispatchEvent(new MouseEvent('click', { bubbles: true }));
        report.click.selected = e.classList.contains('selected');
        report.click.details = details.innerText;
      }
    }
    const foldPath = params.get('fold');
    if (foldPath !== null) {
      const s = M.scopes.findIndex((sc) => sc.path === foldPath);
      report.fold = { found: s > 0 };
      if (s > 0) {
        if (folded[s]) toggle(s);
        const inside = M.nodes.filter((n, v) => {
          for (let a = n.scope; a !== null; a = M.scopes[a].parent) if (a === s) return true;
          return false;
        }).map((n) => n.name);
        const before = new Set(shownNodes());
        report.fold.before = inside.filter((name) => before.has(name));
        const bar = viewport.querySelector(`.scope.open[data-scope="${CSS.escape(foldPath)}"] .bar`);
        if (bar) bar.dispatchEvent(new MouseEvent('click', { bubbles: true }));
        const after = new Set(shownNodes());
        report.fold.after = inside.filter((name) => after.has(name));
        report.fold.box = !!viewport.querySelector(`.scope.folded[data-scope="${CSS.escape(foldPath)}"]`);
        const box = viewport.querySelector(`.scope.folded[data-scope="${CSS.escape(foldPath)}"]`);
        if (box) box.dispatchEvent(new MouseEvent('click', { bubbles: true }));
        const again = new Set(shownNodes());
        report.fold.unfolded = inside.filter((name) => again.has(name));
      }
    }
    const query = params.get('search');
    if (query !== null) {
      search.value = query;
      search.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' }));
      report.search = { count: matches.length, selected: selected === null ? null : M.nodes[selected].name,
        details: details.innerText.split('\n')[0] };
    }
    if (params.get('probe') === '1') {
      new Image().src = 'https://example.invalid/probe.png';
      console.error('probe: console errors are captured');
    }
    for (let s = 0; s < folded.length; s++) folded[s] = M.scopes[s].folded;
    selected = null;
    render();
    fit();
    // Policy violations are reported asynchronously.
    setTimeout(() => {
      report.errors = errors;
      report.violations = violations;
      report.resources = performance.getEntriesByType('resource').map((r) => r.name);
      report.shown = shownNodes().length;
      const pre = document.createElement('pre');
      pre.id = 'kiln-selftest';
      pre.textContent = JSON.stringify(report);
      document.body.appendChild(pre);
    }, 200);
  }

  render();
  fit();
  if (location.hash.startsWith('#selftest')) selfTest();
  // FILE.html#node=NAME opens with that node shown and selected.
  if (location.hash.startsWith('#node=')) {
    const v = byName.get(decodeURIComponent(location.hash.slice('#node='.length)));
    if (v !== undefined) reveal(v);
  }
})();
