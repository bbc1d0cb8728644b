interface MediaRange {
  type: string;
  subtype: string;
  q: number;
}

/** The media ranges of an Accept header; a range with a malformed q-value counts as q=0 (not acceptable). */
function parseAccept(header: string): MediaRange[] {
  return header.split(',').flatMap((part) => {
    const [range, ...params] = part.split(';').map((s) => s.trim());
    const [type, subtype, extra] = (range ?? '').toLowerCase().split('/');
    if (!type || !subtype || extra !== undefined) return [];
    let q = 1;
    for (const param of params) {
      const [name, value] = param.split('=').map((s) => s.trim());
      if (name?.toLowerCase() !== 'q') continue;
      q = value !== undefined && /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(value) ? Number(value) : 0;
    }
    return [{ type, subtype, q }];
  });
}

/** The q-value the header gives `type/subtype`: from its most specific matching range (exact, then `type/*`, then `*\/*`). */
function qualityOf(ranges: MediaRange[], type: string, subtype: string): number {
  const exact = ranges.filter((r) => r.type === type && r.subtype === subtype);
  const sameType = ranges.filter((r) => r.type === type && r.subtype === '*');
  const any = ranges.filter((r) => r.type === '*' && r.subtype === '*');
  const best = [exact, sameType, any].find((matches) => matches.length > 0);
  return best ? Math.max(...best.map((r) => r.q)) : 0;
}

/**
 * True when the Accept header ranks text/html strictly above application/json, as browsers and
 * mail link scanners send. No Accept, `*\/*`, or a tie means JSON: API clients keep the JSON answer.
 */
export function prefersHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  const ranges = parseAccept(accept);
  return qualityOf(ranges, 'text', 'html') > qualityOf(ranges, 'application', 'json');
}
