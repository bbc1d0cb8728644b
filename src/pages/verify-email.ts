import { html } from '../core/html.js';
import type { VerificationTokenState } from '../db/verification-tokens.js';
import type { Page } from './layout.js';

/**
 * The page a GET of the email's link shows. Only the button's POST uses the token, so a mail scanner
 * that fetches the link (and does not submit forms) cannot confirm the address in the person's place.
 */
export function confirmEmailPage(token: string, maskedEmail: string): Page {
  return {
    title: 'Confirm your email address for errand',
    // action is relative: it resolves to this same path, also when errand is served under a path prefix.
    body: html`<p>You are confirming the address <strong>${maskedEmail}</strong>.</p>
<form method="post" action="verify-email">
<input type="hidden" name="token" value="${token}">
<button type="submit">Confirm my email address</button>
</form>
<p class="muted">Did not sign up for errand? Close this page: nothing happens unless you press the button.</p>`,
  };
}

export function emailVerifiedPage(): Page {
  return {
    title: 'Your email address is confirmed',
    body: html`<p class="status status-good">Confirmed</p>
<p>Thank you. There is nothing more to do: you can close this page.</p>`,
  };
}

/** The 400 page for a link that cannot confirm anything, saying what to do next. */
export function verificationLinkProblemPage(state: Exclude<VerificationTokenState, 'usable'>): Page {
  switch (state) {
    case 'used':
      return {
        title: 'This link has already been used',
        body: html`<p>The email address it was sent to is already confirmed. There is nothing more to do: you can close this page.</p>`,
      };
    case 'expired':
      return {
        title: 'This link has expired',
        body: html`<p>Confirmation links work for 24 hours.</p>
<p>To get a new link, sign up again with the same email address: we will send you a fresh one.</p>`,
      };
    case 'unknown':
      return {
        title: 'This link does not work',
        body: html`<p>It may be incomplete: some mail apps cut long links. Open the link from the email again, or copy all of it into your browser.</p>
<p>Still not working? Sign up again with the same email address to get a new link.</p>`,
      };
  }
}
