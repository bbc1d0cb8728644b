// The payment provider simulator, in three parts: its state and answers (simulator/state.ts), the in-process
// client errand uses when PAYMENT_PROVIDER_URL is unset (simulator/client.ts), and the HTTP API served with
// Fastify (simulator/server.ts). Only `npm run provider-sim` (scripts/provider-sim.ts) and the tests import the
// server, straight from simulator/server.ts: errand itself never loads it (a dependency-cruiser rule).
export * from './simulator/state.js';
export { createSimulatorClient } from './simulator/client.js';
