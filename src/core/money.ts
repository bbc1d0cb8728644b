/**
 * An amount in minor units as people read it ("$19.99", "¥1,999", "KWD 1.500").
 * The number of minor units per major unit comes from Intl's own currency data
 * (maximumFractionDigits: JPY 0, USD 2, KWD 3), not from a table of our own.
 */
export function formatMinorUnits(amount: number, currency: string, locale = 'en'): string {
  const format = new Intl.NumberFormat(locale, { style: 'currency', currency });
  const decimals = format.resolvedOptions().maximumFractionDigits ?? 2;
  // A decimal string, not amount / 10 ** decimals: exact up to Number.MAX_SAFE_INTEGER minor units.
  const digits = String(Math.abs(Math.trunc(amount))).padStart(decimals + 1, '0');
  const major = digits.slice(0, digits.length - decimals);
  const minor = decimals > 0 ? `.${digits.slice(digits.length - decimals)}` : '';
  return format.format(`${amount < 0 ? '-' : ''}${major}${minor}` as `${number}`);
}
