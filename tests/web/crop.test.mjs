// Thumbnail crop rectangles, pinned to the layouts/rectangles checked against real grids in Python.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { cropRect, fitSize, gridLayout } from "../../web/oir_chart_logic.js";

const { cases } = JSON.parse(readFileSync(new URL("./fixtures/grid_crop_cases.json", import.meta.url), "utf8"));

test("cropRect gives the rectangle of every candidate, as rendered by oir_core/figures.py", () => {
  for (const { layout, rects } of cases) {
    const shaped = gridLayout(layout);
    assert.ok(shaped, JSON.stringify(layout));
    for (const { step, ...rect } of rects) assert.deepEqual(cropRect(shaped, step), rect, `step ${step}`);
  }
});

test("a layout without a header (older payloads) crops as before", () => {
  const { header, ...old } = cases[0].layout;
  assert.equal(header, 0);
  const first = cases[0].rects[0];
  assert.deepEqual(cropRect(gridLayout(old), first.step), { x: first.x, y: first.y, width: first.width, height: first.height });
});

test("a step that is not in the grid has no rectangle", () => {
  const layout = gridLayout(cases[0].layout);
  assert.equal(cropRect(layout, 999), null);
  assert.equal(cropRect(layout, 0), null);
});

test("inconsistent layouts are refused rather than cropping the wrong candidate", () => {
  const good = cases[0].layout;
  assert.equal(gridLayout(null), null);
  assert.equal(gridLayout({ ...good, columns: 0 }), null);
  assert.equal(gridLayout({ ...good, thumb_width: 12.5 }), null);
  assert.equal(gridLayout({ ...good, steps: [1, "2"] }), null);
  assert.equal(gridLayout({ ...good, bar: -1 }), null);
  assert.equal(gridLayout({ ...good, header: -16 }), null);
  assert.equal(gridLayout({ ...good, header: 1.5 }), null);
  assert.equal(gridLayout({ ...good, steps: undefined }), null);
});

test("fitSize keeps the aspect ratio inside the box", () => {
  assert.deepEqual(fitSize(128, 64, 80, 80), { width: 80, height: 40 });
  assert.deepEqual(fitSize(53, 128, 80, 80), { width: 80 * (53 / 128), height: 80 });
  assert.deepEqual(fitSize(0, 10, 80, 80), { width: 0, height: 0 });
});
