const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * `30m`, `24h`, `2d`, `90s`, `1.5h` → milliseconds. A number and a unit, nothing
 * else: no sign, no spaces, no bare numbers (is `24` hours or minutes?).
 * Returns undefined for anything else, or for zero.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)([smhd])$/.exec(text);
  if (!match) return undefined;
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  return Number.isFinite(ms) && ms > 0 ? Math.round(ms) : undefined;
}
