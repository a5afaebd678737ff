// Stopping a long command cleanly, however it is asked to stop: Ctrl-C (SIGINT), `kill` and
// service managers, containers and `timeout` (SIGTERM), a closed terminal (SIGHUP), and the end
// of `npm run`'s process (npm dies of a SIGTERM it forwards to the shell that runs us, and we
// are left an orphan that no signal reaches: we notice our parent is gone).

/** Why the command is asked to stop, and the exit status that says so (128 + the signal's number). */
export interface StopReason {
  what: string;
  exitCode: number;
}

const SIGNALS: { signal: NodeJS.Signals; exitCode: number; what: string }[] = [
  { signal: 'SIGINT', exitCode: 130, what: 'Ctrl-C' },
  { signal: 'SIGTERM', exitCode: 143, what: 'SIGTERM' },
  { signal: 'SIGHUP', exitCode: 129, what: 'SIGHUP (the terminal closed)' },
];

/** Signals closer together than this are one request (see `onStopRequest`). */
const REPEAT_MS = 500;

/** How often an `npm run` child checks that npm still runs. */
const PARENT_POLL_MS = 1000;

/**
 * Whether this process is the command of one of our package's `npm run` scripts (npm sets
 * npm_lifecycle_script to the script's text). Only then does a vanished parent mean "stop":
 * a user's own `nohup mobilenet train &` outlives its shell on purpose.
 */
function startedByNpmRun(): boolean {
  return /cli[\\/]main\.[jt]s/.test(process.env.npm_lifecycle_script ?? '');
}

/**
 * Call `first` on the first request to stop and `again` on a later one. One keypress can arrive
 * as two signals: the terminal sends SIGINT to the whole foreground process group, and `npm run`
 * also forwards the SIGINT it received to its child; while a training step keeps the event loop
 * busy both are queued and handled back to back, so requests within REPEAT_MS of the first are
 * the same one. Returns a function that removes the handlers.
 */
export function onStopRequest(first: (reason: StopReason) => void, again: (reason: StopReason) => void): () => void {
  let firstAt: number | null = null;
  const request = (reason: StopReason) => {
    const now = performance.now();
    if (firstAt !== null) {
      if (now - firstAt >= REPEAT_MS) again(reason);
      return;
    }
    firstAt = now;
    first(reason);
  };
  const handlers = SIGNALS.map(({ signal, exitCode, what }) => {
    const handler = () => request({ what, exitCode });
    process.on(signal, handler);
    return { signal, handler };
  });
  const parent = process.ppid;
  const poll: NodeJS.Timeout | null = startedByNpmRun()
    ? setInterval(() => {
        if (process.ppid === parent) return;
        clearInterval(poll!); // once: the parent does not come back
        request({ what: 'the end of npm, which started this command', exitCode: 143 });
      }, PARENT_POLL_MS)
    : null;
  poll?.unref();
  return () => {
    for (const { signal, handler } of handlers) process.off(signal, handler);
    if (poll !== null) clearInterval(poll);
  };
}
