// Checks Adaptive Cards with Microsoft's own library (npm `adaptivecards`, pinned in
// package-lock.json): reads a JSON array of cards on stdin, prints a JSON array with, per card,
// `problems` (empty: valid) and `markdown`: every text a Teams client renders as markdown
// (TextBlock text, Fact title and value) by its JSON path, rendered by markdown-it, the
// CommonMark renderer Adaptive Cards' own samples use, so tests can show that text from an
// event never becomes a link. Run by tests/adaptive_cards.py.
//
// A card is valid for amid when:
// - it declares `"type": "AdaptiveCard"` and a version no higher than MAX_VERSION (every Teams
//   client renders 1.4);
// - the library parses it as that version with no warning (unknown element or action types,
//   properties of a later version) and `validateProperties()` finds nothing (a missing url, ...);
// - serialising what the library parsed gives back the same JSON: a property or value the
//   library does not know (a typo, an invalid enum value, a later version's feature) is dropped
//   by the round trip, so any difference is reported with its JSON path;
// - the properties the schema requires but the library tolerates are present (TextBlock.text,
//   each fact's title and value).
"use strict";

const AC = require("adaptivecards/dist/adaptivecards.js");
const markdown = require("markdown-it")({ linkify: false });

const MAX_VERSION = AC.Versions.v1_4;

function differences(expected, actual, path, out) {
  if (Array.isArray(expected) || Array.isArray(actual)) {
    if (!Array.isArray(expected) || !Array.isArray(actual)) {
      out.push(`${path}: not understood by the library`);
      return;
    }
    if (expected.length !== actual.length) {
      out.push(`${path}: ${expected.length} items, the library kept ${actual.length}`);
    }
    for (let i = 0; i < Math.min(expected.length, actual.length); i++) {
      differences(expected[i], actual[i], `${path}[${i}]`, out);
    }
    return;
  }
  if (expected !== null && typeof expected === "object") {
    if (actual === null || typeof actual !== "object") {
      out.push(`${path}: not understood by the library`);
      return;
    }
    for (const key of Object.keys(expected)) {
      if (!(key in actual)) {
        out.push(`${path}.${key}: unknown or unsupported property (dropped by the library)`);
      } else {
        differences(expected[key], actual[key], `${path}.${key}`, out);
      }
    }
    for (const key of Object.keys(actual)) {
      if (!(key in expected) && key !== "$schema") {
        out.push(`${path}.${key}: added by the library`);
      }
    }
    return;
  }
  if (expected !== actual) {
    out.push(`${path}: ${JSON.stringify(expected)} read as ${JSON.stringify(actual)}`);
  }
}

function required(node, path, out) {
  if (Array.isArray(node)) {
    node.forEach((item, i) => required(item, `${path}[${i}]`, out));
    return;
  }
  if (node === null || typeof node !== "object") {
    return;
  }
  if (node.type === "TextBlock" && (typeof node.text !== "string" || node.text === "")) {
    out.push(`${path}.text: a TextBlock needs text`);
  }
  if (node.type === "FactSet") {
    (node.facts || []).forEach((fact, i) => {
      for (const key of ["title", "value"]) {
        if (typeof fact[key] !== "string") {
          out.push(`${path}.facts[${i}].${key}: required`);
        }
      }
    });
  }
  for (const [key, value] of Object.entries(node)) {
    required(value, `${path}.${key}`, out);
  }
}

function rendered(node, path, out) {
  if (Array.isArray(node)) {
    node.forEach((item, i) => rendered(item, `${path}[${i}]`, out));
    return;
  }
  if (node === null || typeof node !== "object") {
    return;
  }
  if (node.type === "TextBlock" && typeof node.text === "string") {
    out[`${path}.text`] = markdown.renderInline(node.text);
  }
  if (node.type === "FactSet") {
    (node.facts || []).forEach((fact, i) => {
      for (const key of ["title", "value"]) {
        if (typeof fact[key] === "string") {
          out[`${path}.facts[${i}].${key}`] = markdown.renderInline(fact[key]);
        }
      }
    });
  }
  for (const [key, value] of Object.entries(node)) {
    if (key !== "facts") {
      rendered(value, `${path}.${key}`, out);
    }
  }
}

function check(json) {
  const problems = [];
  if (json === null || typeof json !== "object" || json.type !== "AdaptiveCard") {
    return ['$: not an object of type "AdaptiveCard"'];
  }
  const version = AC.Version.parse(json.version, new AC.SerializationContext());
  if (!version || !version.isValid) {
    problems.push(`$.version: ${JSON.stringify(json.version)} is not a version`);
  } else if (version.compareTo(MAX_VERSION) > 0) {
    problems.push(`$.version: ${json.version} is later than ${MAX_VERSION.toString()}`);
  }
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext(MAX_VERSION);
  card.parse(json, context);
  for (let i = 0; i < context.eventCount; i++) {
    const event = context.getEventAt(i);
    problems.push(`parse: ${AC.ValidationEvent[event.event]}: ${event.message}`);
  }
  for (const event of card.validateProperties().validationEvents) {
    problems.push(`validate: ${AC.ValidationEvent[event.event]}: ${event.message}`);
  }
  const again = card.toJSON(new AC.SerializationContext(MAX_VERSION));
  differences(json, again, "$", problems);
  required(json, "$", problems);
  return problems;
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
});
process.stdin.on("end", () => {
  const cards = JSON.parse(input);
  const results = cards.map((card) => {
    const html = {};
    rendered(card, "$", html);
    return { problems: check(card), markdown: html };
  });
  process.stdout.write(JSON.stringify(results));
});
