import type { Deps } from '../deps.js';
import { composeOrderTrackingEmail } from '../payments/tracking-email.js';
import { composeVerificationEmail } from '../signup/verification-email.js';
import type { EmailComposers } from './worker.js';

export type EmailComposerDeps = Pick<Deps, 'statements' | 'config' | 'trackingKey'>;

/**
 * Every email type's composer, built in one place and keyed by the job registry (jobs.ts): the email worker derives
 * its processors from this record, so a job name without its composer here does not compile. A composer that needs
 * only the database and a template is written here; one that needs a capability's secrets (a token, a tracking
 * key) lives in that capability and is listed here.
 */
export function createEmailComposers(deps: EmailComposerDeps): EmailComposers {
  return {
    'email-verification': composeVerificationEmail(deps),
    'order-tracking-link': composeOrderTrackingEmail(deps),
  };
}
