import type { Config } from '../config.js';
import type { StoreVerificationToken } from '../db/verification-tokens.js';
import type { EmailComposer } from '../email/worker.js';
import { publicLink, verificationEmail } from '../email/templates.js';
import { mintVerificationToken, VERIFICATION_TOKEN_TTL_MS } from './tokens.js';

/**
 * Minted at send time, so the raw token exists only inside the email: never in
 * Redis, the outbox or a log. A retry mints a new one; older ones stay valid.
 */
export function composeVerificationEmail(deps: {
  statements: { storeVerificationToken: StoreVerificationToken };
  config: Config;
}): EmailComposer<'email-verification'> {
  const storeToken = deps.statements.storeVerificationToken;
  return async (data) => {
    const token = mintVerificationToken();
    // Stored only for an existing, unverified user, in the statement that reads the address.
    const user = await storeToken({
      userId: data.userId,
      hash: token.hash,
      expiresAt: new Date(Date.now() + VERIFICATION_TOKEN_TTL_MS),
    });
    if (!user) return null;
    const link = publicLink(deps.config.PUBLIC_BASE_URL, 'auth/verify-email');
    link.searchParams.set('token', token.raw);
    // The address only: the stored name is the requester's free text (see verificationEmail).
    return { ...verificationEmail(user.email, link.toString()), suppressed: user.suppressed };
  };
}
