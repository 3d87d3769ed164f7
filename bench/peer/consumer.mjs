// The peer: sqs-consumer's handleMessageBatch (batch size 10), with as many consumers as
// amid has pollers, posting every message body to the bench receiver and acknowledging
// the messages whose POST succeeded.
//
//   node consumer.mjs --endpoint URL --queue-url URL --hook URL --consumers 2
//
// Prints "ready" once every consumer polls; on SIGTERM stops them and prints {"posted": n}.
import { SQSClient } from "@aws-sdk/client-sqs";
import { Consumer } from "sqs-consumer";
import { parseArgs } from "node:util";
import http from "node:http";

const { values } = parseArgs({
  options: {
    endpoint: { type: "string" },
    "queue-url": { type: "string" },
    hook: { type: "string" },
    consumers: { type: "string", default: "2" },
  },
});

const hook = new URL(values.hook);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
let posted = 0;

function post(body) {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: hook.hostname,
        port: hook.port,
        path: hook.pathname,
        method: "POST",
        agent,
        headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
      },
      (response) => {
        response.resume();
        response.on("end", () =>
          response.statusCode >= 200 && response.statusCode < 300
            ? resolve()
            : reject(new Error(`HTTP ${response.statusCode}`)),
        );
      },
    );
    request.on("error", reject);
    request.end(body);
  });
}

const sqs = new SQSClient({
  endpoint: values.endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
});

const consumers = Array.from({ length: Number(values.consumers) }, () =>
  Consumer.create({
    queueUrl: values["queue-url"],
    sqs,
    batchSize: 10,
    waitTimeSeconds: 20,
    pollingWaitTimeMs: 0,
    visibilityTimeout: 60,
    handleMessageBatch: async (messages) => {
      const results = await Promise.allSettled(messages.map((m) => post(m.Body)));
      const done = messages.filter((_, i) => results[i].status === "fulfilled");
      posted += done.length;
      return done;
    },
  }),
);
for (const consumer of consumers) {
  consumer.on("error", (error) => console.error(`error: ${error.message}`));
  consumer.on("processing_error", (error) => console.error(`processing_error: ${error.message}`));
  consumer.start();
}
console.log("ready");

process.on("SIGTERM", () => {
  for (const consumer of consumers) consumer.stop({ abort: true });
  console.log(JSON.stringify({ posted }));
  setTimeout(() => process.exit(0), 100);
});
