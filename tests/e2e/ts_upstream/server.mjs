// A stateful MCP server on the official TypeScript SDK: the upstream the proxy tests run.
//
//   node server.mjs --host 127.0.0.1 --port 3000      (serves http://HOST:PORT/mcp)
//
// It is the SDK's ordinary stateful Streamable HTTP setup (one transport per
// session, sessions in this process's memory, an in-memory event store so SSE
// streams can be primed, cut and resumed), with the tools and resources the
// conformance scenarios call plus three the proxy tests use:
//
// - echo {text}: answers the text.
// - whoami: what this process saw: its own session id and the request headers
//   a proxy sets or passes (host, authorization, x-forwarded-*), and its pid.
// - count {steps, delay_ms}: one progress notification per step, then "counted N".
//
// Nobody here wrote this SDK: the tests prove the proxy against a server as
// its users run it.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { InMemoryEventStore } from '@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js';
import {
  isInitializeRequest,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

const { values: args } = parseArgs({
  options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '3000' } },
});
const WATCHED = 'test://watched-resource';
const MAX_BODY = 4 * 1024 * 1024;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (value) => ({ content: [{ type: 'text', text: value }] });

function buildServer() {
  const server = new McpServer(
    { name: 'mcp-session-mw-ts-upstream', version: '1.0.0' },
    { capabilities: { logging: {}, resources: { subscribe: true } } },
  );
  const subscriptions = new Set();

  server.registerResource('watched-resource', WATCHED, { mimeType: 'text/plain' }, async (uri) => ({
    contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'This resource is watched for updates.' }],
  }));
  server.server.setRequestHandler(SubscribeRequestSchema, async (request) => {
    subscriptions.add(request.params.uri);
    return {};
  });
  server.server.setRequestHandler(UnsubscribeRequestSchema, async (request) => {
    subscriptions.delete(request.params.uri);
    return {};
  });

  server.registerTool('echo', { inputSchema: { text: z.string() } }, async ({ text: value }) => text(value));

  server.registerTool('whoami', {}, async (extra) => {
    const headers = extra.requestInfo?.headers ?? {};
    const seen = {
      pid: process.pid,
      session: extra.sessionId ?? null,
      host: headers.host ?? null,
      authorization: headers.authorization ?? null,
      forwarded_for: headers['x-forwarded-for'] ?? null,
      forwarded_host: headers['x-forwarded-host'] ?? null,
      forwarded_proto: headers['x-forwarded-proto'] ?? null,
    };
    return text(JSON.stringify(seen));
  });

  server.registerTool(
    'count',
    { inputSchema: { steps: z.number().int().min(1).max(1000), delay_ms: z.number().int().min(0).max(10000) } },
    async ({ steps, delay_ms }, extra) => {
      const token = extra._meta?.progressToken;
      for (let step = 1; step <= steps; step++) {
        if (step > 1) await sleep(delay_ms);
        if (token !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken: token, progress: step, total: steps, message: `step ${step}` },
          });
        }
      }
      return text(`counted ${steps}`);
    },
  );

  server.registerTool('test_tool_with_logging', {}, async (extra) => {
    for (const [index, data] of ['Tool execution started', 'Tool processing data', 'Tool execution completed'].entries()) {
      if (index) await sleep(50);
      await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', data } });
    }
    return text('Tool with logging executed successfully');
  });

  server.registerTool('test_tool_with_progress', {}, async (extra) => {
    const token = extra._meta?.progressToken;
    for (const [index, done] of [0, 50, 100].entries()) {
      if (index) await sleep(50);
      if (token !== undefined) {
        await extra.sendNotification({
          method: 'notifications/progress',
          params: { progressToken: token, progress: done, total: 100, message: `${done}% done` },
        });
      }
    }
    return text('Tool with progress executed successfully');
  });

  server.registerTool('test_sampling', { inputSchema: { prompt: z.string() } }, async ({ prompt }, extra) => {
    const result = await server.server.createMessage(
      { messages: [{ role: 'user', content: { type: 'text', text: prompt } }], maxTokens: 100 },
      { relatedRequestId: extra.requestId },
    );
    const content = result.content;
    return text(`LLM response: ${content.type === 'text' ? content.text : JSON.stringify(content)}`);
  });

  server.registerTool('test_elicitation', { inputSchema: { message: z.string() } }, async ({ message }, extra) => {
    const answer = await server.server.elicitInput(
      {
        message,
        requestedSchema: {
          type: 'object',
          properties: {
            username: { type: 'string', description: "User's response" },
            email: { type: 'string', description: "User's email address" },
          },
          required: ['username', 'email'],
        },
      },
      { relatedRequestId: extra.requestId },
    );
    const content = answer.action === 'accept' ? answer.content : null;
    return text(`User response: action=${answer.action}, content=${JSON.stringify(content)}`);
  });

  server.registerTool('test_reconnection', {}, async (extra) => {
    extra.closeSSEStream?.();
    await sleep(200);
    return text('Reconnection test completed successfully');
  });

  return server;
}

const eventStore = new InMemoryEventStore();
const transports = new Map();

function reply(res, status, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error('body too large');
    chunks.push(chunk);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://upstream');
  if (url.pathname !== '/mcp') return reply(res, 404, 'Not Found');
  let body;
  if (req.method === 'POST') {
    try {
      body = await readJson(req);
    } catch {
      return reply(res, 400, 'Parse error');
    }
  }
  const sessionId = req.headers['mcp-session-id'];
  const known = sessionId ? transports.get(sessionId) : undefined;
  if (known) return known.handleRequest(req, res, body);
  if (sessionId) return reply(res, 404, 'Session not found');
  if (req.method !== 'POST' || !isInitializeRequest(body)) {
    return reply(res, 400, 'Bad Request: No valid session ID provided');
  }
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore,
    retryInterval: 1000,
    onsessioninitialized: (id) => transports.set(id, transport),
  });
  transport.onclose = () => {
    if (transport.sessionId) transports.delete(transport.sessionId);
  };
  await buildServer().connect(transport);
  await transport.handleRequest(req, res, body);
}

const http = createServer((req, res) => {
  handle(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) reply(res, 500, 'Internal error');
    else res.end();
  });
});
http.keepAliveTimeout = 65_000;
http.listen(Number(args.port), args.host, () => {
  console.log(`ts upstream listening on http://${args.host}:${args.port}/mcp (pid ${process.pid})`);
});
