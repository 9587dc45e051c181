// BullMQ, measured for seawall-queue-bench (benches/queue.rs), which starts a
// throwaway redis-server, flushes it before each run and spawns this script
// once per measurement. It can also be run on its own against a throwaway
// Redis (it leaves its queue behind):
//
//   node benches/queue/bullmq.mjs --url redis://127.0.0.1:6379 \
//       --scenario e2e --jobs 2000 --concurrency 8
//
// BullMQ and ioredis are loaded from BULLMQ_DIR (default
// ~/.cache/seawall/bullmq, where scripts/queue-bench installs them), not from
// this file's folder: ES modules ignore NODE_PATH, so the script resolves
// them with a require() rooted there.
//
// Scenarios, each timed from the first call to the last completion:
// - enqueue_single: min(jobs, 20000) `queue.add` calls, each awaited before
//   the next (one producer, no pipelining: the latency-bound case).
// - enqueue_bulk: `jobs` jobs through `queue.addBulk` in chunks of 100,
//   each chunk awaited before the next.
// - e2e: `jobs` jobs added with addBulk beforehand (not timed), then one
//   Worker with the given concurrency and a no-op processor, from `run()`
//   until the last 'completed' (or 'failed') event.
// - flows: min(jobs / 10, 10000) flows of a parent and 10 children added
//   one after another with `FlowProducer.add`, while a Worker of each queue
//   (the given concurrency) runs them: the children return their payload,
//   the parent sums `getChildrenValues()`. Timed from the first add to the
//   last parent's completion; `jobs` counts every job of every flow.
// - schedulers: min(jobs, 10000) job schedulers (`queue.upsertJobScheduler`)
//   ticking every second (`pattern: '* * * * * *'`, so every one ticks on the
//   same whole second, as seawall's `Schedule::every` does), all starting
//   at one whole second a few seconds ahead (`startDate`), while one Worker
//   (the given concurrency, a no-op processor) runs their jobs; BullMQ adds
//   each scheduler's next job, delayed, when a worker takes the current one.
//   Per job, its tick (the millis its id ends with, `repeat:<id>:<millis>`)
//   and how late it started (`processedOn` less the tick), until every
//   scheduler's first `--ticks` ticks have run. Timed from the first tick;
//   the result carries the lateness p50, p99 and max in ms.
// Every job is added with removeOnComplete { count: 1000 } and removeOnFail
// { count: 10000 }, so the queue's memory stays bounded.
//
// Right before starting the clock it runs CONFIG RESETSTAT, and right after
// stopping it INFO commandstats, on a connection of its own; the raw INFO text
// goes into the result for the caller to count commands from.
//
// Output: one JSON object on stdout:
//   {"system":"bullmq","version":"6.7.0","scenario":"e2e","concurrency":8,
//    "jobs":2000,"seconds":0.41,"failed":0,"commandstats":"# Commandstats\r\n..."}
// Progress and errors go to stderr; the exit code is non-zero on failure.

import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

/** Jobs timed at most by enqueue_single, so a large --jobs stays quick. */
const SINGLE_MAX_JOBS = 20000;
/** Jobs per addBulk call in enqueue_bulk. */
const BULK_CHUNK = 100;
/** Jobs per addBulk call when pre-filling for e2e (not timed). */
const FILL_CHUNK = 1000;
/** Kept as seawall-queue keeps by default: bounded, not everything. */
const JOB_OPTIONS = {
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 10000 },
};

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    scenario: { type: 'string' },
    jobs: { type: 'string', default: '100000' },
    concurrency: { type: 'string', default: '1' },
    ticks: { type: 'string', default: '3' },
  },
});
const SCENARIOS = ['enqueue_single', 'enqueue_bulk', 'e2e', 'flows', 'schedulers'];
/** The most schedulers, as seawall-queue-bench has them. */
const MAX_SCHEDULERS = 10000;
/** Children per flow, and the most flows, as seawall-queue-bench has them. */
const FLOW_CHILDREN = 10;
const MAX_FLOWS = 10000;
if (!args.url || !SCENARIOS.includes(args.scenario)) {
  fail(`usage: bullmq.mjs --url redis://host:port --scenario ${SCENARIOS.join('|')} ` +
    '[--jobs N] [--concurrency C]');
}
const jobs = positiveInteger('--jobs', args.jobs);
const concurrency = positiveInteger('--concurrency', args.concurrency);

const installDir = process.env.BULLMQ_DIR || join(homedir(), '.cache', 'seawall', 'bullmq');
const requireFromInstall = createRequire(join(installDir, 'package.json'));
let bullmq;
let Redis;
let version;
try {
  bullmq = requireFromInstall('bullmq');
  Redis = requireFromInstall('ioredis').default;
  version = requireFromInstall('bullmq/package.json').version;
} catch (error) {
  fail(`bullmq is not installed in ${installDir} (run scripts/queue-bench): ${error.message}`);
}
const { FlowProducer, Queue, Worker } = bullmq;

const connection = { url: args.url, maxRetriesPerRequest: null };
const queueName = `bench-${args.scenario}-${process.pid}-${Date.now()}`;
const stats = new Redis(args.url);
const queue = new Queue(queueName, { connection });
await queue.waitUntilReady();

let result;
try {
  if (args.scenario === 'enqueue_single') {
    result = await enqueueSingle(Math.min(jobs, SINGLE_MAX_JOBS));
  } else if (args.scenario === 'enqueue_bulk') {
    result = await enqueueBulk(jobs);
  } else if (args.scenario === 'flows') {
    result = await flows(Math.min(Math.max(Math.floor(jobs / FLOW_CHILDREN), 1), MAX_FLOWS), concurrency);
  } else if (args.scenario === 'schedulers') {
    result = await schedulers(Math.min(jobs, MAX_SCHEDULERS), positiveInteger('--ticks', args.ticks), concurrency);
  } else {
    result = await endToEnd(jobs, concurrency);
  }
} finally {
  await queue.close();
  stats.disconnect();
}
process.stdout.write(`${JSON.stringify({
  system: 'bullmq',
  version,
  scenario: args.scenario,
  concurrency: ['e2e', 'flows', 'schedulers'].includes(args.scenario) ? concurrency : 1,
  failed: 0,
  ...result,
})}\n`);

/** `count` sequential `queue.add` calls. */
async function enqueueSingle(count) {
  return timed(count, async () => {
    for (let i = 0; i < count; i++) {
      await queue.add('job', { i }, JOB_OPTIONS);
    }
  });
}

/** `count` jobs added BULK_CHUNK at a time, one addBulk after another. */
async function enqueueBulk(count) {
  return timed(count, async () => {
    for (let start = 0; start < count; start += BULK_CHUNK) {
      await queue.addBulk(chunk(start, Math.min(start + BULK_CHUNK, count)));
    }
  });
}

/** `count` pre-filled jobs drained by one Worker running `workerConcurrency` at once. */
async function endToEnd(count, workerConcurrency) {
  for (let start = 0; start < count; start += FILL_CHUNK) {
    await queue.addBulk(chunk(start, Math.min(start + FILL_CHUNK, count)));
  }
  const waiting = await queue.getWaitingCount();
  if (waiting !== count) {
    throw new Error(`pre-filled ${count} jobs but ${waiting} are waiting`);
  }
  const worker = await readyWorker(queueName, async () => {}, workerConcurrency);
  let failed = 0;
  try {
    const result = await timed(count, () => new Promise(resolve => {
      let finished = 0;
      const onFinished = () => {
        finished += 1;
        if (finished === count) {
          resolve();
        }
      };
      worker.on('completed', onFinished);
      worker.on('failed', () => {
        failed += 1;
        onFinished();
      });
      worker.run().catch(error => process.stderr.write(`bullmq worker stopped: ${error}\n`));
    }));
    return { ...result, failed };
  } finally {
    await worker.close();
  }
}

/** `count` flows added one after another while a Worker of each queue runs them. */
async function flows(count, workerConcurrency) {
  const parents = `${queueName}-parents`;
  const parts = `${queueName}-parts`;
  const producer = new FlowProducer({ connection });
  const partWorker = await readyWorker(parts, async job => job.data.k, workerConcurrency);
  const parentWorker = await readyWorker(parents, async job => {
    const values = await job.getChildrenValues();
    return Object.values(values).reduce((sum, value) => sum + value, 0);
  }, workerConcurrency);
  let failed = 0;
  try {
    const result = await timed(count * (FLOW_CHILDREN + 1), async () => {
      let finished = 0;
      const done = new Promise(resolve => {
        const onFinished = () => {
          finished += 1;
          if (finished === count) {
            resolve();
          }
        };
        parentWorker.on('completed', onFinished);
        parentWorker.on('failed', () => {
          failed += 1;
          onFinished();
        });
      });
      partWorker.on('failed', () => { failed += 1; });
      for (const worker of [partWorker, parentWorker]) {
        worker.run().catch(error => process.stderr.write(`bullmq worker stopped: ${error}\n`));
      }
      for (let n = 0; n < count; n++) {
        const children = [];
        for (let k = 0; k < FLOW_CHILDREN; k++) {
          children.push({ name: 'part', queueName: parts, data: { k }, opts: JOB_OPTIONS });
        }
        await producer.add({ name: 'parent', queueName: parents, data: { n }, opts: JOB_OPTIONS, children });
      }
      await done;
    });
    return { ...result, failed };
  } finally {
    await Promise.all([partWorker.close(), parentWorker.close(), producer.close()]);
  }
}

/**
 * `count` schedulers ticking every second from one whole second on, run by
 * one Worker until each has run `ticks` jobs: how late each job started.
 */
async function schedulers(count, ticks, workerConcurrency) {
  // The first tick: a whole second far enough ahead for every upsert to
  // land before it (checked below).
  const startDate = Math.ceil((Date.now() + 5000) / 1000) * 1000;
  for (let start = 0; start < count; start += BULK_CHUNK) {
    const upserts = [];
    for (let n = start; n < Math.min(start + BULK_CHUNK, count); n++) {
      upserts.push(queue.upsertJobScheduler(`s${n}`, { pattern: '* * * * * *', startDate },
        { name: 'tick', data: { n }, opts: JOB_OPTIONS }));
    }
    await Promise.all(upserts);
  }
  if (Date.now() >= startDate) {
    throw new Error(`upserting ${count} schedulers took past their first tick`);
  }
  const worker = await readyWorker(queueName, async () => {}, workerConcurrency);
  const lateness = [];
  const wanted = count * ticks;
  let failed = 0;
  let firstTick = Infinity;
  try {
    await stats.config('RESETSTAT');
    await new Promise(resolve => {
      let finished = 0;
      const onFinished = job => {
        const tick = Number(String(job.id).split(':').pop());
        if (!Number.isFinite(tick) || tick < startDate) {
          return;
        }
        firstTick = Math.min(firstTick, tick);
        lateness.push(Math.max(0, job.processedOn - tick));
        finished += 1;
        if (finished === wanted) {
          resolve();
        }
      };
      worker.on('completed', onFinished);
      worker.on('failed', job => {
        failed += 1;
        onFinished(job);
      });
      worker.run().catch(error => process.stderr.write(`bullmq worker stopped: ${error}\n`));
    });
    const seconds = (Date.now() - firstTick) / 1000;
    const commandstats = await stats.info('commandstats');
    lateness.sort((a, b) => a - b);
    const at = perMille => lateness[Math.floor((lateness.length - 1) * perMille / 1000)];
    return {
      jobs: wanted,
      seconds,
      failed,
      commandstats,
      lateness_ms: [at(500), at(990), lateness[lateness.length - 1]],
    };
  } finally {
    await worker.close();
  }
}

/** A Worker of `name` running `processor`, `workerConcurrency` at once, ready and not yet run. */
async function readyWorker(name, processor, workerConcurrency) {
  const worker = new Worker(name, processor, {
    connection,
    concurrency: workerConcurrency,
    autorun: false,
  });
  worker.on('error', error => process.stderr.write(`bullmq worker error: ${error}\n`));
  await worker.waitUntilReady();
  return worker;
}

/** Runs `body` between CONFIG RESETSTAT and INFO commandstats and times it. */
async function timed(count, body) {
  await stats.config('RESETSTAT');
  const started = performance.now();
  await body();
  const seconds = (performance.now() - started) / 1000;
  const commandstats = await stats.info('commandstats');
  return { jobs: count, seconds, commandstats };
}

/** The jobs numbered `start..end` in addBulk's shape. */
function chunk(start, end) {
  const batch = [];
  for (let i = start; i < end; i++) {
    batch.push({ name: 'job', data: { i }, opts: JOB_OPTIONS });
  }
  return batch;
}

function positiveInteger(flag, text) {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    fail(`${flag} must be a positive integer, not ${text}`);
  }
  return value;
}

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}
