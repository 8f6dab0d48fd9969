// The step_override grammar in JS, pinned to the golden cases that also pin oir_core/search.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  StepOverrideError,
  clickedOverride,
  formatStepOverrides,
  parseStepOverrides,
  pyStrip,
  readOverrides,
  withPairOverride,
} from "../../web/oir_chart_logic.js";

const CASES = JSON.parse(readFileSync(new URL("./fixtures/step_override_cases.json", import.meta.url), "utf8"));

test("parse agrees with Python on every golden case", () => {
  for (const { text, pairs, steps, expect } of CASES.parse) {
    const label = `${JSON.stringify(text)} (${pairs} pairs, T=${steps})`;
    if (expect === "error") {
      assert.throws(() => parseStepOverrides(text, pairs, steps), StepOverrideError, label);
    } else {
      assert.deepEqual(parseStepOverrides(text, pairs, steps), expect, label);
    }
  }
});

test("format agrees with Python on every golden case", () => {
  for (const { overrides, expect } of CASES.format) {
    assert.equal(formatStepOverrides(overrides), expect);
  }
});

test("format then parse is the identity (random overrides)", () => {
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let trial = 0; trial < 500; trial++) {
    const pairs = 1 + Math.floor(random() * 5);
    const steps = 1 + Math.floor(random() * 100);
    const overrides = Array.from({ length: pairs }, () => (random() < 0.4 ? null : 1 + Math.floor(random() * steps)));
    assert.deepEqual(parseStepOverrides(formatStepOverrides(overrides), pairs, steps), overrides);
  }
});

test("Python's whitespace, not JavaScript's, is stripped", () => {
  assert.equal(pyStrip("\x1c 7\x85"), "7"); // Python strips \x1c and \x85; JS trim() does not
  assert.equal(pyStrip("\ufeff7"), "\ufeff7"); // JS trim() strips the BOM; Python does not
  assert.equal(pyStrip("\u3000auto\u00a0"), "auto");
});

test("superscript digits are input errors (Python's isdigit() accepts them, int() does not)", () => {
  assert.throws(() => parseStepOverrides("\u00b2", 1, 50), StepOverrideError);
  assert.throws(() => parseStepOverrides("\u2460", 1, 50), StepOverrideError);
});

test("errors say which pair and what is allowed", () => {
  assert.throws(() => parseStepOverrides("auto, 51", 2, 50), /pair 2: not 'auto' or a step in 1\.\.50/);
  assert.throws(() => parseStepOverrides("1, 2, 3", 2, 50), /3 entries for 2 edit pairs/);
  assert.throws(() => parseStepOverrides("x", 1), /1\.\.T/); // T unknown
  assert.deepEqual(parseStepOverrides("999", 1), [999]);
});

test("a click writes one pair's entry and keeps the others", () => {
  assert.equal(withPairOverride("", 2, 1, 23), "auto, 23");
  assert.equal(withPairOverride("auto, 23", 2, 0, 7), "7, 23");
  assert.equal(withPairOverride("7", 3, 2, 4), "7, auto, 4");
  assert.equal(withPairOverride(" AUTO ,  12 ", 2, 0, 3), "3, 12");
  // a broken entry of another pair is left for the node to report, not silently replaced
  assert.equal(withPairOverride("x, 5", 2, 1, 6), "x, 6");
  // entries beyond the pair count would make the node refuse the whole text: dropped
  assert.equal(withPairOverride("1, 2, 3", 2, 0, 9), "9, 2");
});

test("going back to auto collapses to the widget's default when every pair is auto", () => {
  assert.equal(withPairOverride("auto, 23", 2, 1, null), "");
  assert.equal(withPairOverride("5, 23", 2, 1, null), "5, auto");
  assert.equal(withPairOverride("23", 1, 0, null), "");
});

test("every text a click writes parses to the intended overrides", () => {
  const starts = ["", "auto", "3", "auto, 9", "4, 5, 6", " , 7"];
  for (const start of starts) {
    for (const pairs of [1, 2, 3]) {
      for (let pair = 0; pair < pairs; pair++) {
        for (const step of [null, 1, 17, 50]) {
          let before;
          try {
            before = parseStepOverrides(start, pairs, 50);
          } catch {
            continue; // only texts the node accepts have a defined meaning to keep
          }
          const after = parseStepOverrides(withPairOverride(start, pairs, pair, step), pairs, 50);
          const expected = [...before];
          expected[pair] = step;
          assert.deepEqual(after, expected, `${JSON.stringify(start)} pair ${pair} -> ${step}`);
        }
      }
    }
  }
});

test("clicking the overridden step again goes back to auto", () => {
  assert.equal(clickedOverride(23, 23), null);
  assert.equal(clickedOverride(23, 24), 24);
  assert.equal(clickedOverride(null, 5), 5);
  assert.equal(clickedOverride(undefined, 5), 5);
});

test("readOverrides never throws and marks the entries that do not parse", () => {
  assert.deepEqual(readOverrides("auto, 23", 2, 50), { overrides: [null, 23], error: null });
  const broken = readOverrides("x, 23", 2, 50);
  assert.deepEqual(broken.overrides, [undefined, 23]);
  assert.match(broken.error, /pair 1/);
  const tooMany = readOverrides("1, 2, 3", 2, 50);
  assert.deepEqual(tooMany.overrides, [1, 2]);
  assert.match(tooMany.error, /3 entries/);
  assert.deepEqual(readOverrides(undefined, 1).overrides, [null]);
});

test("a refused override names a valid text to type, the one Python's fix shows", () => {
  assert.throws(() => parseStepOverrides("auto, 51", 2, 50), (error) => error.example === "auto, auto");
  assert.throws(() => parseStepOverrides("23, seven", 2, 30), /type e\.g\. '23, auto'$/);
  assert.throws(() => parseStepOverrides("12, auto, 4", 2, 50), (error) => error.example === "12, auto");
  // the example parses
  assert.deepEqual(parseStepOverrides("23, auto", 2, 30), [23, null]);
  assert.match(readOverrides("0", 1, 9).error, /step in 1\.\.9; type e\.g\. 'auto'$/);
});
