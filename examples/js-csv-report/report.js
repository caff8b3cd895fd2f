// `csv-report` in JavaScript: the license sync's report as CSV.
//
// A drop-in for the built-in `html-report`: the same input (compare's
// parts `counts`, `present_inactive`, `known_as`, `rejected_too_late`, …
// or its whole output as `diff`; the
// create step's items as `created_items` and its approval gate as
// `created_approval`, or its whole output as `created`;
// `deactivated` and `reactivated` from the leavers' and returners' steps,
// `project` from the step that makes project calls earlier runs owed,
// `skipped_disabled`, `warnings`, `members_warnings`, `earlier_unfinished`,
// `only`: the keys a `--only` run was limited to) and the fields the flow's mail step reads (`subject`,
// `mail_html`, `notable`), plus `csv`: one row per person acted on or worth
// a look, `status,name,key,detail`, quoted as RFC 4180 says, and `html`, the
// whole CSV in a page. `mail_html` is bounded whatever the tenant's size:
// the first MAIL_ROWS rows (failures and people waiting for approval first)
// and how many more the full CSV has. The run's id and whether it is a dry
// run come from the run context.

const VERSION = "0.1.0";

/** Rows the mail body shows; the CSV keeps them all. */
const MAIL_ROWS = 100;

const INPUT_SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  additionalProperties: false,
  properties: {
    diff: { type: "object", required: ["missing", "present", "present_inactive"] },
    counts: { type: ["object", "null"] },
    guard: { type: ["object", "null"] },
    present_inactive: { type: ["array", "null"] },
    leavers: { type: ["array", "null"] },
    returners: { type: ["array", "null"] },
    inactive_unmanaged: { type: ["array", "null"] },
    known_as: { type: ["array", "null"] },
    rejected_too_late: { type: ["array", "null"] },
    created: { type: ["object", "null"] },
    created_items: { type: ["array", "null"] },
    created_approval: { type: ["object", "null"] },
    deactivated: { type: ["object", "null"] },
    reactivated: { type: ["object", "null"] },
    project: { type: ["object", "null"] },
    skipped_disabled: { type: "integer", minimum: 0 },
    warnings: { type: "array", items: { type: "string" } },
    members_warnings: { type: "array", items: { type: "string" } },
    earlier_unfinished: { type: "array", items: { type: "object" } },
    only: { type: "array", items: { type: "string" } },
  },
};

const OUTPUT_SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  required: ["csv", "rows", "subject", "html", "mail_html", "notable"],
  properties: {
    csv: { type: "string" },
    rows: { type: "integer" },
    subject: { type: "string" },
    html: { type: "string" },
    mail_html: { type: "string" },
    notable: { type: "boolean" },
    summary: { type: "object" },
  },
};

/** One CSV field: quoted when it holds a comma, quote or line break. */
function field(value) {
  const text = value === null || value === undefined ? "" : String(value);
  // A leading = + - @ would be read as a formula by spreadsheets.
  const safe = /^[=+\-@]/.test(text) ? `'${text}` : text;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STATUS = {
  created: "created",
  conflict: "conflict",
  would_create: "would create",
  failed: "failed",
};

/** One row per item of the create step, then the inactive matches. */
function rowsOf(input) {
  const rows = [];
  const items = input.created_items || (input.created && input.created.items) || [];
  for (const entry of items) {
    const person = entry.item || {};
    if (entry.status === "ok") {
      const out = entry.output || {};
      const detail = [];
      if (out.procore_id !== undefined && out.procore_id !== null) detail.push(`Procore id ${out.procore_id}`);
      if (out.reason) detail.push(out.reason);
      if (out.project) detail.push(`project: ${String(out.project).replace(/_/g, " ")}`);
      rows.push([STATUS[out.status] || out.status, person.displayName, person.key, detail.join("; ")]);
    } else {
      rows.push(["failed", person.displayName, person.key, (entry.error && entry.error.message) || ""]);
    }
  }
  // People to create above max_unapproved_creates, and those rejected.
  const creates = input.created_approval || (input.created && input.created.approval) || {};
  for (const held of creates.waiting || []) {
    const person = held.item || {};
    const approve = creates.approve ? `approve with: ${creates.approve.split(" --only ")[0]} --only ${held.key}` : "";
    rows.push(["waits for approval", person.displayName, held.key, ["missing from Procore", approve].filter(Boolean).join("; ")]);
  }
  for (const held of creates.rejected || []) {
    const person = held.item || {};
    rows.push(["rejected", person.displayName, held.key, "missing from Procore"]);
  }
  for (const step of ["deactivated", "reactivated"]) {
    const done = input[step] || {};
    for (const entry of done.items || []) {
      const person = entry.item || {};
      if (entry.status === "ok") {
        const out = entry.output || {};
        rows.push([String(out.status || step).replace(/_/g, " "), out.name || person.name, person.key, lifecycleDetail(out)]);
      } else {
        rows.push(["failed", person.name, person.key, (entry.error && entry.error.message) || ""]);
      }
    }
    // Leavers an admin has not decided on yet, and those they rejected.
    const gate = done.approval || {};
    for (const held of gate.waiting || []) {
      const person = held.item || {};
      const approve = gate.approve ? `approve with: ${gate.approve.split(" --only ")[0]} --only ${held.key}` : "";
      rows.push(["waits for approval", person.name, held.key, [person.reason, approve].filter(Boolean).join("; ")]);
    }
    for (const held of gate.rejected || []) {
      const person = held.item || {};
      rows.push(["rejected", person.name, held.key, person.reason || ""]);
    }
  }
  // Project calls earlier runs owed (Procore refused them or never
  // answered), made in this run.
  for (const entry of (input.project || {}).items || []) {
    const owed = entry.item || {};
    const detail = `Procore id ${owed.procore_id}; project ${owed.project_id}`;
    if (entry.status === "ok") {
      const done = { added: "added to project", removed: "removed from project", not_on_project: "not on project" };
      const status = (entry.output || {}).status;
      rows.push([done[status] || String(status).replace(/_/g, " "), owed.name, owed.key, detail]);
    } else {
      rows.push(["failed", owed.name, owed.key, (entry.error && entry.error.message) || detail]);
    }
  }
  for (const inactive of compareOutput(input).present_inactive || []) {
    rows.push([
      "inactive in Procore",
      inactive.displayName,
      inactive.key,
      `holds a license but Procore user ${inactive.procore_id} is inactive; not created again`,
    ]);
  }
  // The same Entra user as a managed Procore user whose address is older
  // than the person's key (their mail appeared or changed): not created.
  for (const known of compareOutput(input).known_as || []) {
    const address = known.email || known.login || known.managed_as;
    rows.push([
      "in Procore under another address",
      known.name,
      known.key,
      `the same Entra user as Procore user ${known.procore_id}, known in Procore as ${address}; Procore's email was not changed; not created`,
    ]);
  }
  // Deactivations Procore had applied before an admin rejected them (a
  // run that died sent them): recorded, and they stand.
  for (const told of compareOutput(input).rejected_too_late || []) {
    rows.push([
      "deactivated before the rejection",
      told.name || "",
      told.key,
      `Procore id ${told.procore_id}; Procore had applied it, so it stands`,
    ]);
  }
  return rows;
}

/** The compare step's output: whole (`diff`), or its parts in the input. */
function compareOutput(input) {
  return input.diff || input;
}

/** How many license holders are in Procore and active. */
function presentCount(diff) {
  if (Array.isArray(diff.present)) return diff.present.length;
  return (diff.counts && diff.counts.present) || 0;
}

/** What a leaver's or returner's step output says beyond its status. */
function lifecycleDetail(out) {
  const detail = [];
  if (out.procore_id !== undefined && out.procore_id !== null) detail.push(`Procore id ${out.procore_id}`);
  if (out.reason) detail.push(out.reason);
  if (out.removed_from_project) detail.push(`project: ${String(out.removed_from_project).replace(/_/g, " ")}`);
  if (out.problem) detail.push(out.problem);
  if (out.license_group) detail.push(`license group ${out.license_group}`);
  if (out.project) detail.push(`project: ${String(out.project).replace(/_/g, " ")}`);
  return detail.join("; ");
}

function badInput(message) {
  const error = { kind: "bad-input", code: "bad-input", message };
  return Object.assign(new Error(message), { payload: error }, error);
}

export function describe() {
  return {
    name: "js-csv-report",
    version: VERSION,
    summary: "The license sync's report as CSV (JavaScript)",
    inputSchema: JSON.stringify(INPUT_SCHEMA),
    outputSchema: JSON.stringify(OUTPUT_SCHEMA),
    connections: [],
  };
}

export function run(inputText, context) {
  let input;
  try {
    input = JSON.parse(inputText);
  } catch (e) {
    throw badInput(`the input is not JSON: ${e.message}`);
  }
  if (!input || typeof input !== "object" || Array.isArray(input)) {
    throw badInput("expected {counts?, present_inactive?, created_items?, created_approval?, deactivated?, reactivated?, project?, skipped_disabled?, warnings?, members_warnings?, earlier_unfinished?, only?}");
  }
  const rows = rowsOf(input);
  const csv = [["status", "name", "key", "detail"], ...rows]
    .map((row) => row.map(field).join(","))
    .join("\r\n") + "\r\n";
  const count = (status) => rows.filter((r) => r[0] === status).length;
  const summary = {
    created: count("created"),
    conflicts: count("conflict"),
    failed: count("failed"),
    would_create: count("would create"),
    deactivated: count("deactivated"),
    reactivated: count("reactivated"),
    waiting_for_approval: count("waits for approval"),
    inactive_in_procore: count("inactive in Procore"),
    skipped_disabled: input.skipped_disabled || 0,
    present: presentCount(compareOutput(input)),
  };
  const acted = summary.created + summary.failed + summary.would_create +
    summary.deactivated + summary.reactivated + count("would deactivate") + count("would reactivate") +
    count("added to project") + count("removed from project") + count("not on project") +
    count("would add") + count("would remove");
  // Deactivations the guard held back (no license group matched, or the
  // holders more than halved) need someone even when nobody waits yet.
  const guard = compareOutput(input).guard || {};
  // Earlier runs stopped before their report: what they did is news.
  const earlier = Array.isArray(input.earlier_unfinished) ? input.earlier_unfinished : [];
  const notable = acted + summary.waiting_for_approval > 0 || guard.hold === true || earlier.length > 0;
  const prefix = context.dryRun ? "[dry run] " : "";
  const waits = summary.waiting_for_approval ? `, ${summary.waiting_for_approval} waiting for approval` : "";
  // A `--only` run's counts are only of the people it names.
  const only = Array.isArray(input.only) ? input.only.filter((k) => String(k).trim() !== "") : [];
  const onlySuffix = only.length === 0 ? ""
    : ` (only ${only.length} ${only.length === 1 ? "person" : "people"}, --only)`;
  const subject = `${prefix}Procore license sync: ${summary.created} created, ` +
    `${summary.deactivated} deactivated, ${summary.reactivated} reactivated, ${summary.failed} failed${waits}${onlySuffix}`;
  const onlyLine = only.length === 0 ? ""
    : `<p>This run handled only the people named with --only (${escapeHtml(only.join(", "))}): ` +
      `everyone else was left as they were.</p>`;
  const head = `<!doctype html><meta charset="utf-8"><title>${escapeHtml(subject)}</title>` +
    `<p>Run ${escapeHtml(context.runId)}</p>${onlyLine}`;
  const html = `${head}<pre>${escapeHtml(csv)}</pre>`;
  const mail_html = mailBody(head, rows, context.runId);
  return JSON.stringify({ csv, rows: rows.length, subject, html, mail_html, notable, summary });
}

/** What needs someone first: failures, then people waiting for approval. */
function urgency(row) {
  return row[0] === "failed" ? 0 : row[0] === "waits for approval" ? 1 : 2;
}

/** The first MAIL_ROWS rows, most urgent first, and where the rest are. */
function mailBody(head, rows, runId) {
  const shown = rows
    .map((row, at) => [urgency(row), at, row])
    .sort((a, b) => a[0] - b[0] || a[1] - b[1])
    .slice(0, MAIL_ROWS)
    .map(([, , row]) => row);
  const csv = [["status", "name", "key", "detail"], ...shown]
    .map((row) => row.map(field).join(","))
    .join("\r\n");
  const more = rows.length - shown.length;
  const where = more > 0
    ? `${more} more rows are only in the full CSV: report.csv in the folder of run ${runId}; ` +
      `sluice runs show ${runId} shows where it is.`
    : `All ${rows.length} rows; the CSV is report.csv in the folder of run ${runId}.`;
  return `${head}<pre>${escapeHtml(csv)}</pre><p>${escapeHtml(where)}</p>`;
}
