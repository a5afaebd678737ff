// `mobilenet step --web`: serves the learner's page (built by scripts/build-web.ts into
// dist/web/) on 127.0.0.1 only, with the headers that make the page cross-origin isolated
// (COOP / COEP), until Ctrl-C. From a clone the page is built on demand with esbuild (a
// devDependency); an installed package ships it built.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from './common.js';

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png' };

/** The package's root: the nearest folder above this file (cli/ from source, dist/cli/ built) holding package.json. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  // dirname('/') is '/': stop there rather than loop.
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/** The folder holding the built page: dist/web/, built now when this is a clone with the sources newer than it. */
export async function webFolder(): Promise<string> {
  const root = packageRoot();
  const out = join(root, 'dist/web');
  const sources = join(root, 'web');
  const built = existsSync(join(out, 'worker.js'));
  if (existsSync(sources) && existsSync(join(root, 'scripts/build-web.ts'))) {
    // Stale when any file that went into the last build (inputs.json lists them), the page's
    // own files or the build script changed since.
    const inputsFile = join(out, 'inputs.json');
    const inputs = existsSync(inputsFile) ? (JSON.parse(readFileSync(inputsFile, 'utf8')) as string[]) : [];
    const watched = [...inputs, 'web/index.html', 'web/style.css', 'scripts/build-web.ts'].map((f) => join(root, f));
    const stale = !built || inputs.length === 0 || watched.some((f) => !existsSync(f) || statSync(f).mtimeMs > statSync(join(out, 'worker.js')).mtimeMs);
    if (stale) {
      const { buildWeb } = (await import(join(root, 'scripts/build-web.ts'))) as { buildWeb: (out: string) => Promise<unknown> };
      await buildWeb(out);
    }
  } else if (!built) {
    throw new UsageError(`the learner's page is not built: ${out} is missing (from a clone: npm run build:web)`);
  }
  return out;
}

/**
 * Serve `dir` on 127.0.0.1:`port` (0 = any free port); resolves once listening. `isolate: false`
 * leaves out the COOP / COEP headers, as a plain static host does (for the test of that case).
 */
export function serveFolder(dir: string, port: number, options: { isolate?: boolean } = {}): Promise<Server> {
  const root = resolve(dir);
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? '/', 'http://localhost').pathname);
    const file = normalize(join(root, path === '/' ? 'index.html' : path));
    // Cross-origin isolation (SharedArrayBuffer for threads) and nothing outside the folder.
    const headers: Record<string, string> = options.isolate === false ? { 'cache-control': 'no-cache' } : { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp', 'cache-control': 'no-cache' };
    if (!file.startsWith(root + sep) || !existsSync(file) || statSync(file).isDirectory()) {
      response.writeHead(404, headers).end('not found');
      return;
    }
    response.writeHead(200, { ...headers, 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
  });
  return new Promise((done, fail) => {
    server.once('error', (e: NodeJS.ErrnoException) => fail(e.code === 'EADDRINUSE' ? new UsageError(`--port ${port}: the port is in use (another program listens on it; choose another, or 0 for any free one)`) : e.code === 'EACCES' ? new UsageError(`--port ${port}: not allowed to listen on it (ports below 1024 need privileges)`) : e));
    server.listen(port, '127.0.0.1', () => done(server));
  });
}
