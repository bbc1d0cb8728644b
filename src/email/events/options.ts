import { ConfigError, type Config } from '../../config.js';
import type { SoftBouncePolicy } from '../../db/suppressions.js';
import { createMailgunReceiver } from './mailgun.js';
import { createPostmarkReceiver } from './postmark.js';
import { createResendReceiver } from './resend.js';
import { createSesReceiver, DEFAULT_SNS_CERT_HOST, type SnsFetchOptions } from './ses.js';
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

const text = (value: unknown): string | undefined => {
  const joined = Array.isArray(value) ? value.join(',') : value;
  return typeof joined === 'string' && joined.trim() !== '' ? joined.trim() : undefined;
};
const integer = (value: unknown, fallback: number): number => (typeof value === 'number' && Number.isInteger(value) ? value : fallback);

/** The one place Config becomes EmailEventsOptions; a value that cannot work stops start-up naming its variable. */
export function emailEventsOptions(config: Config): EmailEventsOptions {
  const env = config as unknown as Record<string, unknown>;
  const topicArns = text(env.EMAIL_EVENTS_SES_TOPIC_ARNS)
    ?.split(',')
    .map((arn) => arn.trim())
    .filter(Boolean);
  let certHost: RegExp;
  try {
    const pattern = text(env.EMAIL_EVENTS_SNS_CERT_HOST) ?? DEFAULT_SNS_CERT_HOST;
    certHost = env.EMAIL_EVENTS_SNS_CERT_HOST instanceof RegExp ? env.EMAIL_EVENTS_SNS_CERT_HOST : new RegExp(pattern);
  } catch {
    throw new ConfigError('invalid configuration: EMAIL_EVENTS_SNS_CERT_HOST is not a valid regular expression');
  }
  const sendgridKey = text(env.EMAIL_EVENTS_SENDGRID_PUBLIC_KEY);
  if (sendgridKey) {
    try {
      sendgridPublicKey(sendgridKey);
    } catch {
      throw new ConfigError('invalid configuration: EMAIL_EVENTS_SENDGRID_PUBLIC_KEY is not the base64 DER of an ECDSA P-256 public key');
    }
  }
  const postmarkAuth = text(env.EMAIL_EVENTS_POSTMARK_AUTH);
  if (postmarkAuth && !postmarkAuth.includes(':')) {
    throw new ConfigError('invalid configuration: EMAIL_EVENTS_POSTMARK_AUTH must be user:password');
  }
  return {
    ...(topicArns?.length ? { ses: { topicArns, certHost } } : {}),
    ...(sendgridKey ? { sendgridPublicKey: sendgridKey } : {}),
    ...(text(env.EMAIL_EVENTS_MAILGUN_SIGNING_KEY) ? { mailgunSigningKey: text(env.EMAIL_EVENTS_MAILGUN_SIGNING_KEY) } : {}),
    ...(postmarkAuth ? { postmarkAuth } : {}),
    ...(text(env.EMAIL_EVENTS_RESEND_SECRET) ? { resendSecret: text(env.EMAIL_EVENTS_RESEND_SECRET) } : {}),
    softBounce: {
      limit: integer(env.EMAIL_SOFT_BOUNCE_LIMIT, 3),
      windowDays: integer(env.EMAIL_SOFT_BOUNCE_WINDOW_DAYS, 7),
    },
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
