/** The throttle key of an address: lower-cased, with any `+tag` removed from the local part (the email still goes to the address as given). */
export function signupThrottleKey(email: string): string {
  const at = email.lastIndexOf('@');
  if (at < 0) return email.toLowerCase();
  const local = email.slice(0, at);
  const plus = local.indexOf('+');
  return `${plus < 0 ? local : local.slice(0, plus)}${email.slice(at)}`.toLowerCase();
}
