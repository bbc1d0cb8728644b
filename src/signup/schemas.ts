import { Type } from 'typebox';
import { SafeString } from '../core/schemas.js';

/** POST /auth/signup's body, also the rule each row of a users import is judged by (batch/users-import.ts). */
export const SignupBodySchema = Type.Object(
  {
    email: SafeString({ format: 'email', maxLength: 254 }),
    // An empty name is a valid string (the contract's 400s are bad email, unknown fields, wrong types); stored as no name.
    // Pasted into email bodies: one line, no control characters.
    name: Type.Optional(SafeString({ maxLength: 200, singleLine: true })),
  },
  { additionalProperties: false, examples: [{ email: 'ada@example.com', name: 'Ada' }] },
);
