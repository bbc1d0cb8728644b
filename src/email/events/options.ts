import type { Config } from '../../config.js';
import type { SoftBouncePolicy } from '../../db/suppressions.js';
import { createMailgunReceiver } from './mailgun.js';
import { createPostmarkReceiver } from './postmark.js';
import { createResendReceiver } from './resend.js';
import { createSesReceiver, type SnsFetchOptions } from './ses.js';
import { createSendgridReceiver, sendgridPublicKey } from './sendgrid.js';
import type { EmailEventProvider, EmailEventReceiver } from './types.js';

/** What the email-event receivers need, independent of how config.ts spells it. */
export interface EmailEventsOptions {
  ses?: { topicArns: readonly string[]; certHost: RegExp };
  sendgridPublicKey?: string;
  mailgunSigningKey?: string;
  postmarkAuth?: string;
  resendSecret?: string;
  softBounce: SoftBouncePolicy;
  /** How SNS certificates and SubscribeURLs are fetched (tests add their own CA). */
  fetch?: Omit<SnsFetchOptions, 'hostPattern'>;
}

/** The one place Config becomes EmailEventsOptions; loadConfig has already checked every value. */
export function emailEventsOptions(config: Config): EmailEventsOptions {
  const topicArns = config.EMAIL_EVENTS_SES_TOPIC_ARNS;
  return {
    ...(topicArns.length > 0 ? { ses: { topicArns, certHost: new RegExp(config.EMAIL_EVENTS_SNS_CERT_HOST) } } : {}),
    ...(config.EMAIL_EVENTS_SENDGRID_PUBLIC_KEY ? { sendgridPublicKey: config.EMAIL_EVENTS_SENDGRID_PUBLIC_KEY.trim() } : {}),
    ...(config.EMAIL_EVENTS_MAILGUN_SIGNING_KEY ? { mailgunSigningKey: config.EMAIL_EVENTS_MAILGUN_SIGNING_KEY } : {}),
    ...(config.EMAIL_EVENTS_POSTMARK_AUTH ? { postmarkAuth: config.EMAIL_EVENTS_POSTMARK_AUTH } : {}),
    ...(config.EMAIL_EVENTS_RESEND_SECRET ? { resendSecret: config.EMAIL_EVENTS_RESEND_SECRET } : {}),
    softBounce: { limit: config.EMAIL_SOFT_BOUNCE_LIMIT, windowDays: config.EMAIL_SOFT_BOUNCE_WINDOW_DAYS },
  };
}

/** A receiver per configured provider; the others have no route (404). */
export function createReceivers(options: EmailEventsOptions): Map<EmailEventProvider, EmailEventReceiver> {
  const receivers: EmailEventReceiver[] = [];
  if (options.ses)
    receivers.push(createSesReceiver({ ...options.fetch, topicArns: options.ses.topicArns, hostPattern: options.ses.certHost }));
  if (options.sendgridPublicKey) receivers.push(createSendgridReceiver(sendgridPublicKey(options.sendgridPublicKey)));
  if (options.mailgunSigningKey) receivers.push(createMailgunReceiver(options.mailgunSigningKey));
  if (options.postmarkAuth) receivers.push(createPostmarkReceiver(options.postmarkAuth));
  if (options.resendSecret) receivers.push(createResendReceiver(options.resendSecret));
  return new Map(receivers.map((receiver) => [receiver.provider, receiver]));
}
