// The payment provider simulator, in three parts: its state and answers (simulator/state.ts), the in-process
// client errand uses when PAYMENT_PROVIDER_URL is unset (simulator/client.ts), and the HTTP API served with
// Fastify (simulator/server.ts, run by `npm run provider-sim`).
export * from './simulator/state.js';
export { createSimulatorClient } from './simulator/client.js';
export { buildSimulatorApp, serveSimulator, type RunningSimulator } from './simulator/server.js';
