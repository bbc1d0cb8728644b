import { sql, type RawBuilder } from 'kysely';

// errand's one CSV writer: PostgreSQL builds every CSV cell (the orders export, the import-errors file), so
// rows never pass through this process one by one and the rules below live in one expression.

// Characters that make a CSV field need quotes (RFC 4180), as a bracket expression for PostgreSQL's `~`.
const CSV_SPECIAL = '[",\r\n]';

/**
 * A cell a spreadsheet would run as a formula (CONTRACT.md): one starting with `=`, `+`, `-`, `@`, tab or CR
 * gets a leading `'` (OWASP's CSV-injection advice), so `=HYPERLINK(…)` typed as an email shows as text.
 */
const CSV_FORMULA_START = '^[-=+@\t\r]';

/** One text value as a CSV cell: a leading `'` on a formula start, then quoted, its quotes doubled, when it contains a comma, quote, CR or LF. */
export const csvSql = (value: RawBuilder<unknown>): RawBuilder<string> => {
  const cell = sql<string>`(CASE WHEN ${value} ~ ${CSV_FORMULA_START} THEN '''' || ${value} ELSE ${value} END)`;
  return sql<string>`CASE WHEN ${value} ~ ${CSV_SPECIAL} THEN '"' || replace(${cell}, '"', '""') || '"' ELSE ${cell} END`;
};
