// How much of a node each of the pack's DOM widgets reserves (web/oir_chart_logic.js): the slot
// must hold the whole content plus the margins the frontend insets the element by, or the last
// strip row, the last pair's x-axis labels, the error line or the progress line are cut off.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  CHART_LAYOUT,
  STRIP_LAYOUT,
  TEXT_LAYOUT,
  axisTicks,
  chartFrame,
  chartHeight,
  domWidgetHeight,
  stripHeight,
  textHeight,
} from "../../web/oir_chart_logic.js";

test("a DOM widget's slot leaves its element the whole content inside both margins", () => {
  for (const [content, margin] of [[72, 6], [16, 4], [0, 6], [33.4, 6]]) {
    const slot = domWidgetHeight(content, margin);
    // The frontend draws the element at slot y + margin with height slot - 2 * margin.
    assert.ok(slot - 2 * margin >= content, `${content} px in a ${slot} px slot with margin ${margin}`);
    assert.ok(slot - 2 * margin < content + 1, "no more than a pixel to spare");
  }
  assert.equal(domWidgetHeight(-5, 6), 12, "no negative content");
});

test("the chart grows by one panel per pair and by the error line when it shows", () => {
  const panel = CHART_LAYOUT.header + CHART_LAYOUT.plot + CHART_LAYOUT.gap;
  assert.equal(chartHeight(0, false), CHART_LAYOUT.placeholder);
  assert.equal(chartHeight(0, true), CHART_LAYOUT.placeholder, "no charts, no error line");
  for (const pairs of [1, 2, 3]) {
    assert.equal(chartHeight(pairs, false), CHART_LAYOUT.legend + pairs * panel);
    assert.equal(chartHeight(pairs, true) - chartHeight(pairs, false), CHART_LAYOUT.error);
  }
  assert.ok(CHART_LAYOUT.error >= TEXT_LAYOUT.line, "the error line's box holds one line of text");
});

test("the x-axis labels and the thumbnail fit inside a panel's plot height", () => {
  const steps = [1, 2, 3, 4, 5];
  const frame = chartFrame(steps, 240, CHART_LAYOUT.plot);
  // web/oir_search_ui.js puts the tick labels' baseline 13 px below the plot area, 9 px text
  // (about 3 px below the baseline): the label must end inside the SVG, which clips it otherwise.
  assert.ok(axisTicks(steps, frame).length > 0);
  assert.ok(frame.bottom + 13 + 3 <= CHART_LAYOUT.plot, `labels end at ${frame.bottom + 16} of ${CHART_LAYOUT.plot}`);
  // The thumbnail box (canvas + one caption line) is no taller than the plot beside it.
  assert.ok(CHART_LAYOUT.thumb + TEXT_LAYOUT.line <= CHART_LAYOUT.plot);
});

test("the strip takes one row per pair, or its placeholder", () => {
  assert.equal(stripHeight(0), STRIP_LAYOUT.placeholder);
  assert.deepEqual([1, 2, 3].map((pairs) => stripHeight(pairs)), [1, 2, 3].map((p) => p * STRIP_LAYOUT.row));
  // A row holds its label line and its cells (12 px) above the 4 px gap to the next row.
  assert.ok(STRIP_LAYOUT.row - 4 >= TEXT_LAYOUT.line + 2 + 12);
});

test("wrapped text takes a line per wrap, as the browser wraps it at spaces", () => {
  const chars = (text) => text.length; // 1 px per character: widths are exact
  assert.equal(textHeight("", 100, chars), 0);
  assert.equal(textHeight("   ", 100, chars), 0);
  assert.equal(textHeight("aaaa bbbb", 9, chars, 10), 10, "exactly one line");
  assert.equal(textHeight("aaaa bbbb", 8, chars, 10), 20, "one px short: the second word wraps");
  assert.equal(textHeight("aa bb cc dd", 5, chars, 10), 20, "'aa bb' | 'cc dd'");
  assert.equal(textHeight("a".repeat(25), 10, chars, 10), 30, "a long word breaks over three lines");
  assert.equal(textHeight(`x ${"a".repeat(25)} y`, 10, chars, 10), 40, "x | aaaaaaaaaa | aaaaaaaaaa | aaaaa y");
  // Narrower nodes never need fewer lines.
  const note = "The schedule gave 7 noise levels for steps = 6: the candidates are numbered 1 to 7.";
  let last = 0;
  for (const width of [400, 300, 200, 120, 60]) {
    const height = textHeight(note, width);
    assert.ok(height >= last, `${width} px: ${height} < ${last}`);
    last = height;
  }
  assert.ok(textHeight(note, 60) > textHeight(note, 400));
});
