// The page's engine: a LearnerSession in a Web Worker, so the page stays responsive while a
// MobileNet runs, and the WebAssembly kernels compile off the main thread. Each message is a
// command with an id; the answer carries the same id, and a failure its message.

import { getThreads, kernelJobsOnThreads, startThreads } from '../src/ops/parallel.js';
import { LearnerSession, SessionError, type SessionSetup, type StepView } from './session.js';

export type Command =
  | { type: 'setup'; setup: SessionSetup; threads: number }
  | { type: 'next' }
  | { type: 'previous' }
  | { type: 'continue'; op: string | null }
  | { type: 'check' }
  | { type: 'train'; count: number }
  | { type: 'restart' }
  | { type: 'sabotage'; op: string }
  | { type: 'digest' };

let session: LearnerSession | null = null;

function state(view: StepView | null) {
  const s = session!;
  return { view, at: s.at, length: s.length, loss: s.lossValue, losses: s.losses };
}

async function run(command: Command): Promise<unknown> {
  if (command.type === 'setup') {
    // Threads need shared memory, which only a cross-origin isolated page has.
    if (command.threads !== getThreads()) await startThreads(crossOriginIsolated ? command.threads : 1);
    session = new LearnerSession(command.setup);
    const s = session;
    return { ...state(null), graph: s.graph(), classNames: s.classNames, labels: s.labels, inChannels: s.inChannels, resolution: s.resolution, input: s.input.data.slice(0, s.inChannels * s.resolution * s.resolution) };
  }
  if (session === null) throw new SessionError('no model yet');
  switch (command.type) {
    case 'next':
      return state(session.next());
    case 'previous':
      return state(session.previous());
    case 'continue':
      return state(session.continueTo(command.op));
    case 'check':
      return { checks: session.check() };
    case 'train': {
      const started = performance.now();
      const losses = session.train(command.count);
      return { ...state(session.currentView()), trained: losses, msPerStep: (performance.now() - started) / command.count, graph: session.graph() };
    }
    case 'restart':
      session.restart();
      return { ...state(null), graph: session.graph() };
    case 'sabotage':
      session.sabotage(command.op);
      session.restart();
      return { ...state(null), graph: session.graph() };
    case 'digest':
      return { digest: session.weightsDigest(), threads: getThreads(), jobsOnThreads: kernelJobsOnThreads() };
  }
}

self.onmessage = async (event: MessageEvent<{ id: number; command: Command }>) => {
  const { id, command } = event.data;
  try {
    const result = await run(command);
    (self as unknown as Worker).postMessage({ id, ok: true, result });
  } catch (e) {
    (self as unknown as Worker).postMessage({ id, ok: false, error: (e as Error).message });
  }
};
