import type { Agent } from 'node:http';

// Node's http module taken as CommonJS. An ESM import of 'node:http' builds the module's ESM facade,
// which reads every export, its lazy WebSocket, CloseEvent and MessageEvent getters included: that
// loads undici, about 20 ms of every process start on Node 24. Its types are imported as usual.
const http = process.getBuiltinModule('node:http');

export const { createServer, request: httpRequest } = http;
export const HttpAgent = http.Agent;
export type HttpAgent = Agent;
