// BullMQ through redshard: 50 jobs, a delayed job, a failing job retried, and a flow (a parent
// job waiting for its child). Usage: node bullmq_app.js PORT. Prints `bullmq ok`.
const { Queue, Worker, QueueEvents, FlowProducer } = require('bullmq');
require('events').defaultMaxListeners = 50;
const port = Number(process.argv[2]);
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
(async () => {
  const q = new Queue('emails', { connection });
  const done = [];
  const w = new Worker('emails', async job => {
    if (job.name === 'fail') throw new Error('boom');
    return job.data.n * 2;
  }, { connection });
  const events = new QueueEvents('emails', { connection });
  await events.waitUntilReady();
  const jobs = [];
  for (let i = 0; i < 50; i++) jobs.push(await q.add('double', { n: i }));
  const delayed = await q.add('double', { n: 100 }, { delay: 300 });
  const bad = await q.add('fail', {}, { attempts: 2 });
  const results = await Promise.all(jobs.map(j => j.waitUntilFinished(events, 20000)));
  const ok = results.every((r, i) => r === 2 * i);
  const d = await delayed.waitUntilFinished(events, 20000);
  let failed = false;
  try { await bad.waitUntilFinished(events, 20000); } catch (e) { failed = true; }
  const flow = new FlowProducer({ connection });
  const tree = await flow.add({ name: 'double', queueName: 'emails', data: { n: 5 },
    children: [{ name: 'double', queueName: 'emails', data: { n: 1 } }] });
  const parent = await tree.job.waitUntilFinished(events, 20000);
  if (!(ok && d === 200 && failed && parent === 10)) {
    throw new Error(`results ${ok} delayed ${d} failed ${failed} flow ${parent}`);
  }
  console.log('bullmq ok');
  await w.close(); await q.close(); await events.close(); await flow.close();
  process.exit(0);
})().catch(e => { console.error('ERROR', e.message); process.exit(1); });
