import type { Options as CsvParseOptions } from 'csv-parse';

/** One parser configuration for the upload check and the job, so both see the same records and line numbers. */
export const CSV_OPTIONS: CsvParseOptions = {
  bom: true,
  info: true,
  skip_empty_lines: true,
  // A row with the wrong number of fields is a bad row (reported), not a bad file.
  relax_column_count: true,
  // Files from spreadsheets and from scripts mix CRLF and LF.
  record_delimiter: ['\r\n', '\n'],
};

export interface ParsedRecord {
  record: string[];
  info: { empty_lines: number };
}

export interface ImportColumns {
  count: number;
  email: number;
  name: number | undefined;
}

/** Header `email,name` in any order and case, extra columns ignored; undefined without an email column. */
export function importColumns(header: string[]): ImportColumns | undefined {
  const names = header.map((h) => h.trim().toLowerCase());
  const email = names.indexOf('email');
  if (email === -1) return undefined;
  const name = names.indexOf('name');
  return { count: names.length, email, name: name === -1 ? undefined : name };
}
